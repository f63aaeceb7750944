//! The sidecar binary routing HTTP request by request: header and path filters from two
//! laptops side by side on one keep-alive connection, HTTP/2 streams of one connection,
//! overlaps refused, connections that are not HTTP left to the app and counted, and
//! mirrors that see every request while the app answers, also when the laptop is gone.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tether_tests::within;
use tether_tunnel::sidecar::Link;
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tether_tunnel::wire::intercept::{Holder, SidecarReply, SidecarRequest, SidecarRoutes};
use tether_tunnel::wire::route::{Filter, HeaderMatch, Mode, PathMatch, Pattern, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const AGENT: &str = env!("CARGO_BIN_EXE_tether-agent");
const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sidecar {
    child: Child,
    control: SocketAddr,
    listen: SocketAddr,
    app: u16,
}

impl Sidecar {
    fn start(app: u16) -> Sidecar {
        let (control, listen) = (free_port(), free_port());
        let child = Command::new(AGENT)
            .arg("sidecar")
            .args(["--control", &format!("127.0.0.1:{control}")])
            .args(["--forward", &format!("{listen}={app}")])
            .env("TETHER_LOG", "info")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tether-agent sidecar");
        Sidecar {
            child,
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, control)),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, listen)),
            app,
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

    /// A laptop whose streams are answered by an HTTP server saying `name`; its requests'
    /// paths are sent to `seen`.
    async fn laptop(
        &self,
        name: &'static str,
        route: Route,
        seen: Option<mpsc::UnboundedSender<String>>,
    ) -> (Link, SidecarReply) {
        let mut link = self.link().await;
        let mut incoming = link.take_incoming().unwrap();
        tokio::spawn(async move {
            while let Some(mut s) = incoming.next().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let request =
                        FlowRequest::decode(&expect_frame(&mut s, MAX_FRAME, "req").await.unwrap());
                    assert!(
                        matches!(request, Ok(FlowRequest::Tcp { .. })),
                        "{request:?}"
                    );
                    write_frame(&mut s, &FlowReply::Ready.encode())
                        .await
                        .unwrap();
                    serve_http(TokioIo::new(s), name, seen).await;
                });
            }
        });
        let reply = link
            .request(&SidecarRequest::ClaimRoute {
                port: self.app,
                holder: holder(name),
                route,
            })
            .await
            .unwrap();
        (link, reply)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holder(name: &str) -> Holder {
    Holder {
        intercept: name.into(),
        user: "dev".into(),
        host: "laptop".into(),
        local: "127.0.0.1:8080".into(),
    }
}

fn header(value: &str) -> Route {
    Route {
        mode: Mode::Steal,
        filter: Filter {
            headers: vec![HeaderMatch {
                name: "x-dev".into(),
                value: Pattern::exact(value),
            }],
            path: None,
        },
    }
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on `io`, answering `name`.
async fn serve_http<I>(io: I, name: &'static str, seen: Option<mpsc::UnboundedSender<String>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let path = request.uri().path().to_owned();
            let _ = request.into_body().collect().await;
            if let Some(seen) = seen {
                let _ = seen.send(path);
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// An app on loopback that answers `app`.
async fn app_server(seen: Option<mpsc::UnboundedSender<String>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_http(TokioIo::new(s), "app", seen.clone()));
        }
    });
    port
}

/// One HTTP/1.1 keep-alive connection to the sidecar.
async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str, dev: Option<&str>) -> Request<Empty<Bytes>> {
    let mut r = Request::get(path).header("host", "web");
    if let Some(dev) = dev {
        r = r.header("x-dev", dev);
    }
    r.body(Empty::new()).unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn routes(link: &mut Link) -> SidecarRoutes {
    match link.request(&SidecarRequest::Routes).await.unwrap() {
        SidecarReply::Routes(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn header_filters_route_each_request_of_one_keep_alive_connection() {
    let app = app_server(None).await;
    let sidecar = Sidecar::start(app);
    let (mut one, reply) = sidecar.laptop("one", header("one"), None).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });
    let (two, reply) = sidecar.laptop("two", header("two"), None).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });

    // A third laptop whose filter may take the same requests is refused, naming the holder.
    let (_three, reply) = sidecar.laptop("three", header("one"), None).await;
    assert!(
        matches!(&reply, SidecarReply::Overlaps { by, .. } if by.intercept == "one"),
        "{reply:?}"
    );
    let (_global, reply) = sidecar.laptop("global", Route::GLOBAL, None).await;
    assert!(matches!(&reply, SidecarReply::Overlaps { .. }), "{reply:?}");

    let mut conn = h1(sidecar.listen).await;
    let mut answers = Vec::new();
    for dev in [
        None,
        Some("one"),
        None,
        Some("two"),
        Some("nobody"),
        Some("one"),
    ] {
        conn.ready().await.unwrap();
        answers.push(text(conn.send_request(get("/", dev)).await.unwrap()).await);
    }
    assert_eq!(answers, ["app", "one", "app", "two", "app", "one"]);

    // Leaving the second keeps the first, on the same connection.
    drop(two);
    within("the second claim to go", WAIT, async {
        loop {
            let r = routes(&mut one).await;
            if r.ports[0].claims.len() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for (dev, want) in [(Some("two"), "app"), (Some("one"), "one")] {
        conn.ready().await.unwrap();
        assert_eq!(
            text(conn.send_request(get("/", dev)).await.unwrap()).await,
            want
        );
    }

    // Not HTTP: to the app, and counted.
    let mut raw = TcpStream::connect(sidecar.listen).await.unwrap();
    raw.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    raw.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = raw.read_to_end(&mut out).await;
    let r = routes(&mut one).await;
    assert_eq!(r.ports[0].not_http, 1, "{r:?}");
    assert_eq!(r.ports[0].claims[0].matched, 3, "{r:?}");
}

#[tokio::test]
async fn path_prefixes_and_http2_streams_are_routed_one_by_one() {
    let app = app_server(None).await;
    let sidecar = Sidecar::start(app);
    let v2 = Route {
        mode: Mode::Steal,
        filter: Filter {
            headers: Vec::new(),
            path: Some(PathMatch::prefix("/v2")),
        },
    };
    let (_v2, reply) = sidecar.laptop("v2", v2, None).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });
    let (_one, reply) = sidecar.laptop("one", header("one"), None).await;
    // Both may match `/v2` with x-dev=one.
    assert!(matches!(reply, SidecarReply::Overlaps { .. }), "{reply:?}");

    let stream = TcpStream::connect(sidecar.listen).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Concurrent streams on the one connection.
    let asks = ["/v1/users", "/v2/users", "/v1", "/v2"].map(|path| {
        let mut sender = sender.clone();
        async move {
            let request = Request::get(format!("http://web{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            text(sender.send_request(request).await.unwrap()).await
        }
    });
    let answers = futures::future::join_all(asks).await;
    assert_eq!(answers, ["app", "v2", "app", "v2"]);
}

#[tokio::test]
async fn mirrors_see_every_request_while_the_app_answers() {
    let (app_seen, mut app_paths) = mpsc::unbounded_channel();
    let app = app_server(Some(app_seen)).await;
    let sidecar = Sidecar::start(app);
    let (seen, mut mirrored) = mpsc::unbounded_channel();
    let mirror = Route {
        mode: Mode::Mirror,
        filter: Filter::default(),
    };
    let (mut link, reply) = sidecar.laptop("mirror", mirror.clone(), Some(seen)).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });
    // A mirror coexists with a filtered intercept.
    let (_one, reply) = sidecar.laptop("one", header("one"), None).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });

    let mut conn = h1(sidecar.listen).await;
    for i in 0..5 {
        conn.ready().await.unwrap();
        let response = conn
            .send_request(get(&format!("/item/{i}"), None))
            .await
            .unwrap();
        assert_eq!(text(response).await, "app");
    }
    conn.ready().await.unwrap();
    assert_eq!(
        text(conn.send_request(get("/mine", Some("one"))).await.unwrap()).await,
        "one"
    );
    let mut copies = Vec::new();
    within("the mirror to see every request", WAIT, async {
        while copies.len() < 6 {
            copies.push(mirrored.recv().await.unwrap());
        }
    })
    .await;
    copies.sort();
    assert_eq!(
        copies,
        [
            "/item/0", "/item/1", "/item/2", "/item/3", "/item/4", "/mine"
        ]
    );
    let mut answered = Vec::new();
    while let Ok(p) = app_paths.try_recv() {
        answered.push(p);
    }
    assert_eq!(answered.len(), 5, "{answered:?}");

    // A mirror whose laptop refuses every copy: the app answers all the same; drops counted.
    let (mut refusing, _) = {
        let mut link = sidecar.link().await;
        let mut incoming = link.take_incoming().unwrap();
        tokio::spawn(async move {
            while let Some(mut s) = incoming.next().await {
                let _ = expect_frame(&mut s, MAX_FRAME, "req").await;
                let _ = write_frame(&mut s, &FlowReply::Refused.encode()).await;
            }
        });
        let reply = link
            .request(&SidecarRequest::ClaimRoute {
                port: app,
                holder: holder("gone"),
                route: mirror,
            })
            .await
            .unwrap();
        (link, reply)
    };
    for i in 0..3 {
        conn.ready().await.unwrap();
        assert_eq!(
            text(
                conn.send_request(get(&format!("/after/{i}"), None))
                    .await
                    .unwrap()
            )
            .await,
            "app"
        );
    }
    within("the refused copies to be counted", WAIT, async {
        loop {
            let r = routes(&mut refusing).await;
            if let Some(c) = r.ports[0]
                .claims
                .iter()
                .find(|c| c.holder.intercept == "gone")
                && c.dropped == 3
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let r = routes(&mut link).await;
    let mirror = r.ports[0]
        .claims
        .iter()
        .find(|c| c.holder.intercept == "mirror")
        .unwrap();
    assert_eq!(mirror.dropped, 0, "{r:?}");
}

/// An app that switches a request asking for `upgrade: echo` to a byte echo.
async fn upgrading_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|mut request: Request<Incoming>| async move {
                if request
                    .headers()
                    .get("upgrade")
                    .is_some_and(|v| v == "echo")
                {
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(upgrade.await.unwrap());
                        let mut buf = [0u8; 64];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    let response = Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    return Ok::<_, Infallible>(response);
                }
                Ok(Response::new(Full::new(Bytes::from("app"))))
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_upgraded_connection_is_carried_through_the_router() {
    let app = upgrading_app().await;
    let sidecar = Sidecar::start(app);
    let (_one, reply) = sidecar.laptop("one", header("one"), None).await;
    assert_eq!(reply, SidecarReply::Claimed { port: app });
    let mut s = TcpStream::connect(sidecar.listen).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: web\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    within("the echo", WAIT, s.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(&echoed, b"ping");
}
