//! `tether-sandbox workload` as the kubelet runs it: port and readiness from the environment,
//! one log line per request on stdout, a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The workload process; killed on drop if a test fails before stopping it.
struct Workload {
    child: Option<Child>,
    lines_rx: mpsc::Receiver<String>,
}

impl Workload {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-sandbox"))
            .arg("workload")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tether-sandbox starts");
        let stdout: ChildStdout = child.stdout.take().expect("stdout is piped");
        // A reader thread forwards stdout lines, so the test can wait for one with a deadline.
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let w = Workload {
            child: Some(child),
            lines_rx,
        };
        w.line_containing("listening on");
        w
    }

    fn line_containing(&self, what: &str) -> String {
        loop {
            let line = self
                .lines_rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("no stdout line with {what:?} ({e}: exited or 10 s)"));
            if line.contains(what) {
                return line;
            }
        }
    }

    /// Sends SIGTERM and returns whether the process exited successfully.
    fn terminate(mut self) -> bool {
        let mut child = self.child.take().expect("started");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a live pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        // std has no wait with a deadline: a thread waits and reports.
        let (exited_tx, exited_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exited_tx.send(child.wait().map(|s| s.success()).unwrap_or(false));
        });
        match exited_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(success) => success,
            Err(_) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                panic!("the workload did not exit within 5 s of SIGTERM");
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn http_echo_takes_port_and_readiness_from_the_environment() {
    let port = free_port();
    let w = Workload::start(
        &["http-echo"],
        &[
            ("PORT", &port.to_string()),
            ("UNREADY", "1"),
            ("POD_NAME", "demo-0"),
            ("POD_IP", "10.244.0.7"),
        ],
    );
    let page = http_get(port, "/hello");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("hostname: demo-0\npod-ip: 10.244.0.7\n"),
        "{page}"
    );
    let log = w.line_containing("/hello");
    assert!(log.contains("GET /hello 200"), "{log}");
    let health = http_get(port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(w.terminate(), "exit status 0 after SIGTERM");
}

#[test]
fn tcp_and_udp_echo_take_their_port_from_the_flag() {
    let port = free_port();
    let tcp = Workload::start(&["tcp-echo", "--port", &port.to_string()], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    drop(s);
    assert!(tcp.terminate());

    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp = Workload::start(&["udp-echo", "--port", &port.to_string()], &[]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.send_to(b"datagram", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram");
    assert!(udp.terminate());
}
