//! The sidecar binary on loopback ports: connections go to the app until a laptop claims the
//! port, then to that laptop; a second laptop is told who holds it; a laptop that refuses a
//! connection resets it; and a laptop that closes or falls silent gives the port back.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tether_tests::within;
use tether_tunnel::sidecar::Link;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tether_tunnel::wire::intercept::{Holder, SidecarReply, SidecarRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AGENT: &str = env!("CARGO_BIN_EXE_tether-agent");
const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sidecar process, killed (by its pid) when dropped.
struct Sidecar {
    child: Child,
    control: SocketAddr,
    listen: SocketAddr,
}

impl Sidecar {
    fn start(app: u16) -> Sidecar {
        let (control, listen) = (free_port(), free_port());
        let child = Command::new(AGENT)
            .arg("sidecar")
            .args(["--control", &format!("127.0.0.1:{control}")])
            .args(["--forward", &format!("{listen}={app}")])
            .env("TETHER_LOG", "debug")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tether-agent sidecar");
        Sidecar {
            child,
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, control)),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, listen)),
        }
    }

    async fn link(&self) -> Link {
        let stream = within("the control port", WAIT, async {
            loop {
                if let Ok(s) = TcpStream::connect(self.control).await {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Link::open(stream).await.expect("sidecar handshake")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that answers every connection with `name` and closes.
async fn named_server(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    port
}

/// What a client connecting to the sidecar's port reads; `Err` for a reset.
async fn ask(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Serves the sidecar's streams as a laptop would: `Ready` and `name`, or a refusal.
fn serve_streams(link: &mut Link, answer: Option<&'static str>) {
    let mut incoming = link.take_incoming().unwrap();
    tokio::spawn(async move {
        while let Some(mut s) = incoming.next().await {
            let request =
                FlowRequest::decode(&expect_frame(&mut s, MAX_FRAME, "req").await.unwrap());
            assert!(
                matches!(request, Ok(FlowRequest::Tcp { .. })),
                "{request:?}"
            );
            match answer {
                Some(name) => {
                    write_frame(&mut s, &FlowReply::Ready.encode())
                        .await
                        .unwrap();
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
                None => write_frame(&mut s, &FlowReply::Refused.encode())
                    .await
                    .unwrap(),
            }
        }
    });
}

fn holder(user: &str) -> Holder {
    Holder {
        intercept: "web".into(),
        user: user.into(),
        host: "laptop".into(),
        local: "127.0.0.1:8080".into(),
    }
}

async fn wait_for_answer(addr: SocketAddr, want: &str) {
    within(&format!("{want} to answer"), WAIT, async {
        loop {
            if ask(addr).await.ok().as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn claims_route_connections_to_the_laptop_and_end_with_it() {
    let app = named_server("app").await;
    let sidecar = Sidecar::start(app);
    let mut first = sidecar.link().await;
    wait_for_answer(sidecar.listen, "app").await;

    serve_streams(&mut first, Some("laptop"));
    let claim = SidecarRequest::Claim {
        port: app,
        holder: holder("ann"),
    };
    assert_eq!(
        first.request(&claim).await.unwrap(),
        SidecarReply::Claimed { port: app }
    );
    for _ in 0..3 {
        assert_eq!(ask(sidecar.listen).await.unwrap(), "laptop");
    }

    // Another laptop is told who holds the port, and cannot claim an unknown one.
    let mut second = sidecar.link().await;
    let theirs = SidecarRequest::Claim {
        port: app,
        holder: holder("bob"),
    };
    assert_eq!(
        second.request(&theirs).await.unwrap(),
        SidecarReply::Held {
            port: app,
            by: holder("ann")
        }
    );
    let unknown = SidecarRequest::Claim {
        port: 1,
        holder: holder("bob"),
    };
    assert_eq!(
        second.request(&unknown).await.unwrap(),
        SidecarReply::NoSuchPort {
            port: 1,
            ports: vec![app]
        }
    );
    match second.request(&SidecarRequest::Status).await.unwrap() {
        SidecarReply::Status(status) => {
            assert_eq!(status.ports[0].holder, Some(holder("ann")));
            assert_eq!(status.ports[0].intercepted, 3);
        }
        other => panic!("{other:?}"),
    }

    // The first laptop goes away: the app answers again, and the port is free to claim.
    drop(first);
    wait_for_answer(sidecar.listen, "app").await;
    serve_streams(&mut second, None);
    assert_eq!(
        second.request(&theirs).await.unwrap(),
        SidecarReply::Claimed { port: app }
    );
    // A laptop with nothing listening locally refuses: the client sees a reset, not a hang.
    let refused = within("a refused connection", WAIT, ask(sidecar.listen)).await;
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        second
            .request(&SidecarRequest::Release { port: app })
            .await
            .unwrap(),
        SidecarReply::Released { port: app }
    );
    assert_eq!(ask(sidecar.listen).await.unwrap(), "app");
}

#[tokio::test]
async fn a_silent_laptop_loses_its_claim() {
    let app = named_server("app").await;
    let sidecar = Sidecar::start(app);
    let mut link = sidecar.link().await;
    serve_streams(&mut link, Some("laptop"));
    let claim = SidecarRequest::Claim {
        port: app,
        holder: holder("ann"),
    };
    assert_eq!(
        link.request(&claim).await.unwrap(),
        SidecarReply::Claimed { port: app }
    );
    assert_eq!(ask(sidecar.listen).await.unwrap(), "laptop");
    // No pings from here on, and the link stays open: the liveness timeout alone decides.
    wait_for_answer(sidecar.listen, "app").await;
    drop(link);
}
