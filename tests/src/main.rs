//! tether-testkit: the small servers and clients the end-to-end tests and the benchmark run
//! inside their network namespaces (an HTTP server, a UDP echo, an authoritative DNS server,
//! a UDP ping, a throughput/latency probe, and the HTTP and DNS clients of the Kubernetes
//! benchmark). No external tools are needed for them.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod h2;

use clap::{Parser, Subcommand};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
use tether_tunnel::resolv::ResolvConf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[derive(Parser)]
#[command(name = "tether-testkit")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP/1.1 and HTTP/2 (prior knowledge, gRPC) server answering as NAME; prints
    /// `request METHOD PATH` for every request.
    H2Echo {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
    /// One HTTP/2 request with prior knowledge (`--grpc`: a unary gRPC call); prints the
    /// body, or the gRPC reply and its grpc-status.
    H2Call {
        #[arg(long)]
        url: String,
        /// NAME=VALUE (repeatable).
        #[arg(long)]
        header: Vec<String>,
        #[arg(long)]
        grpc: bool,
    },
    /// HTTP/1.1 server answering every request with BODY (keep-alive supported).
    Http {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        body: String,
    },
    /// UDP echo server.
    UdpEcho {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Authoritative DNS server for NAME=IP A records; NXDOMAIN for anything else.
    Dns {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long = "record", value_parser = parse_record)]
        records: Vec<(String, IpAddr)>,
    },
    /// Sends MESSAGE to a UDP address and prints the reply.
    UdpPing {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        message: String,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Server side of `probe`: discards bulk data, echoes latency probes.
    ProbeServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Measures bulk throughput (Gbit/s) or request latency (µs percentiles) to a probe server.
    Probe {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_parser = ["throughput", "latency"])]
        mode: String,
        /// Seconds of bulk transfer, or number of requests for latency.
        #[arg(long, default_value_t = 3)]
        amount: u64,
    },
    /// Sends GET requests to URL one after another on one keep-alive connection and prints
    /// the p50, p90 and p99 latency in µs. The host may be a name (resolved as the system
    /// does); with --retry-for, connection failures are retried until that many seconds have
    /// passed (for the first request after a connect).
    HttpLatency {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        #[arg(long, default_value_t = 0.0)]
        retry_for: f64,
        /// NAME=VALUE sent with every request (repeatable).
        #[arg(long)]
        header: Vec<String>,
    },
    /// Downloads URL (HTTP/1.1, Content-Length) and prints the body's throughput in MiB/s.
    HttpDownload {
        #[arg(long)]
        url: String,
    },
    /// Asks the first nameserver of /etc/resolv.conf (or --server) for NAME's A record,
    /// one query after another, and prints the p50, p90 and p99 latency in µs. Every answer
    /// must hold an address.
    DnsLatency {
        #[arg(long)]
        name: String,
        #[arg(long)]
        server: Option<SocketAddr>,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
    },
}

fn parse_record(s: &str) -> std::result::Result<(String, IpAddr), String> {
    let (name, ip) = s.split_once('=').ok_or("expected NAME=IP")?;
    let ip = ip.parse().map_err(|e| format!("{e}"))?;
    Ok((name.trim_end_matches('.').to_ascii_lowercase(), ip))
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::H2Echo { listen, name } => h2::serve(listen, name).await,
        Cmd::H2Call { url, header, grpc } => h2::call(&url, &header, grpc).await,
        Cmd::Http { listen, body } => http(listen, body).await,
        Cmd::UdpEcho { listen } => udp_echo(listen).await,
        Cmd::Dns { listen, records } => dns(listen, records).await,
        Cmd::UdpPing {
            to,
            message,
            timeout_ms,
        } => udp_ping(to, &message, timeout_ms).await,
        Cmd::ProbeServer { listen } => probe_server(listen).await,
        Cmd::Probe { to, mode, amount } => probe(to, &mode, amount).await,
        Cmd::HttpLatency {
            url,
            requests,
            retry_for,
            header,
        } => http_latency(&url, requests, retry_for, &header).await,
        Cmd::HttpDownload { url } => http_download(&url).await,
        Cmd::DnsLatency {
            name,
            server,
            queries,
        } => dns_latency(&name, server, queries).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-testkit: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn http(listen: SocketAddr, body: String) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("ready");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    let close = head.contains("connection: close");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}\n",
                        body.len() + 1,
                        if close { "connection: close\r\n" } else { "" },
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}

async fn udp_echo(listen: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    println!("ready");
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], from).await?;
    }
}

async fn dns(listen: SocketAddr, records: Vec<(String, IpAddr)>) -> Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    let tcp = TcpListener::bind(listen).await?;
    let records = std::sync::Arc::new(records);
    println!("ready");
    // DNS over TCP (RFC 1035 4.2.2): clients retry here after a truncated UDP answer.
    let tcp_records = records.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let records = tcp_records.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while stream.read_exact(&mut len).await.is_ok() {
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Some(reply) = dns_reply(&query, &records, usize::MAX) else {
                        return;
                    };
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        if let Some(reply) = dns_reply(&buf[..n], &records, 512) {
            socket.send_to(&reply, from).await?;
        }
    }
}

/// An authoritative answer from `records`; over `limit` bytes (without EDNS) it is
/// truncated with TC set, as a real server does over UDP.
fn dns_reply(query: &[u8], records: &[(String, IpAddr)], limit: usize) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.queries = query.queries.clone();
    let mut code = ResponseCode::NXDomain;
    if let Some(q) = query.queries.first() {
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        for (record_name, ip) in records {
            if *record_name != name {
                continue;
            }
            code = ResponseCode::NoError;
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*v6)),
                _ => continue,
            };
            reply
                .answers
                .push(Record::from_rdata(Name::from_ascii(&name).ok()?, 30, rdata));
        }
    }
    reply.metadata.response_code = code;
    let bytes = reply.to_vec().ok()?;
    let limit = query
        .edns
        .as_ref()
        .map(|e| usize::from(e.max_payload()).max(limit))
        .unwrap_or(limit);
    if bytes.len() > limit {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}

async fn udp_ping(to: SocketAddr, message: &str, timeout_ms: u64) -> Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).await?;
    socket.connect(to).await?;
    socket.send(message.as_bytes()).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_millis(timeout_ms), socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no reply from {to} within {timeout_ms} ms"))??;
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

const PROBE_SIZE: usize = 64;

async fn probe_server(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("ready");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut mode = [0u8; 1];
            if stream.read_exact(&mut mode).await.is_err() {
                return;
            }
            if mode[0] == b'T' {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total: u64 = 0;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = stream.write_all(&total.to_be_bytes()).await;
            } else {
                let mut buf = [0u8; PROBE_SIZE];
                while stream.read_exact(&mut buf).await.is_ok() {
                    if stream.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

async fn probe(to: SocketAddr, mode: &str, amount: u64) -> Result<()> {
    let mut stream = TcpStream::connect(to).await?;
    stream.set_nodelay(true)?;
    if mode == "throughput" {
        stream.write_all(b"T").await?;
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let deadline = Duration::from_secs(amount);
        let mut sent: u64 = 0;
        while start.elapsed() < deadline {
            stream.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        stream.shutdown().await?;
        let mut total = [0u8; 8];
        stream.read_exact(&mut total).await?;
        let elapsed = start.elapsed().as_secs_f64();
        let received = u64::from_be_bytes(total);
        if received != sent {
            return Err(format!("sent {sent} bytes but the server received {received}").into());
        }
        println!("{:.3}", received as f64 * 8.0 / elapsed / 1e9);
    } else {
        stream.write_all(b"L").await?;
        let mut buf = [0u8; PROBE_SIZE];
        let mut samples = Vec::with_capacity(amount as usize);
        for i in 0..amount {
            buf[..8].copy_from_slice(&i.to_be_bytes());
            let start = Instant::now();
            stream.write_all(&buf).await?;
            stream.read_exact(&mut buf).await?;
            samples.push(start.elapsed().as_micros() as u64);
        }
        print_percentiles(samples);
    }
    Ok(())
}

/// Prints the p50, p90 and p99 of latency samples in µs.
fn print_percentiles(mut samples: Vec<u64>) {
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!("{} {} {}", pct(0.5), pct(0.9), pct(0.99));
}

/// `http://host[:port]/path` as (host, port, path).
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, 80),
    };
    Ok((host.to_owned(), port, path.to_owned()))
}

/// An HTTP/1.1 keep-alive connection that reads responses with a Content-Length.
struct HttpConn {
    stream: TcpStream,
    request: Vec<u8>,
    /// The response head (and whatever of the body came with it).
    buf: Vec<u8>,
    /// Where reads land; allocated once, not per request, so it costs no latency.
    chunk: Vec<u8>,
}

impl HttpConn {
    async fn open(url: &str) -> Result<HttpConn> {
        HttpConn::open_with(url, &[]).await
    }

    /// With `NAME=VALUE` headers on every request.
    async fn open_with(url: &str, headers: &[String]) -> Result<HttpConn> {
        let (host, port, path) = parse_url(url)?;
        let stream = TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        let mut extra = String::new();
        for h in headers {
            let (k, v) = h.split_once('=').ok_or("a header is NAME=VALUE")?;
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n").into_bytes();
        Ok(HttpConn {
            stream,
            request,
            buf: Vec::with_capacity(64 * 1024),
            chunk: vec![0u8; 256 * 1024],
        })
    }

    /// Sends the request and reads the whole response; returns the body's length. The body
    /// is read and dropped chunk by chunk, so large bodies are not kept.
    async fn get(&mut self) -> Result<u64> {
        self.stream.write_all(&self.request).await?;
        self.buf.clear();
        let chunk = &mut self.chunk;
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = self.stream.read(chunk).await?;
            if n == 0 {
                return Err("the server closed the connection before answering".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            return Err(format!("the server answered {status}").into());
        }
        let length: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("the response has no Content-Length")?;
        let mut left = length.saturating_sub((self.buf.len() - head_end) as u64);
        while left > 0 {
            let n = self.stream.read(chunk).await?;
            if n == 0 {
                return Err(format!("the body ended {left} bytes short").into());
            }
            left = left.saturating_sub(n as u64);
        }
        Ok(length)
    }
}

async fn http_latency(
    url: &str,
    requests: usize,
    retry_for: f64,
    headers: &[String],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(retry_for);
    let mut conn = loop {
        let attempt = async {
            let mut conn = HttpConn::open_with(url, headers).await?;
            conn.get().await?;
            Result::Ok(conn)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(conn)) => break conn,
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => {
                return Err(format!("no answer from {url}").into());
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        conn.get().await?;
        samples.push(start.elapsed().as_micros() as u64);
    }
    print_percentiles(samples);
    Ok(())
}

async fn http_download(url: &str) -> Result<()> {
    let mut conn = HttpConn::open(url).await?;
    let start = Instant::now();
    let bytes = conn.get().await?;
    let took = start.elapsed().as_secs_f64();
    println!("{:.1}", bytes as f64 / (1024.0 * 1024.0) / took);
    Ok(())
}

/// The first `nameserver` of /etc/resolv.conf.
fn system_nameserver() -> Result<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf")?;
    ResolvConf::parse(&text)
        .nameservers
        .first()
        .copied()
        .ok_or_else(|| "/etc/resolv.conf names no nameserver".into())
}

async fn dns_latency(name: &str, server: Option<SocketAddr>, queries: usize) -> Result<()> {
    use hickory_proto::op::{MessageType, OpCode, Query};
    let server = match server {
        Some(s) => s,
        None => system_nameserver()?,
    };
    let socket = UdpSocket::bind(("0.0.0.0", 0)).await?;
    socket.connect(server).await?;
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))?;
    let mut buf = vec![0u8; 65535];
    let mut samples = Vec::with_capacity(queries);
    for i in 0..queries {
        let id = (i % 65536) as u16;
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(fqdn.clone(), RecordType::A));
        let bytes = query.to_vec()?;
        let start = Instant::now();
        socket.send(&bytes).await?;
        let answer = loop {
            let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
                .await
                .map_err(|_| format!("no answer from {server} for {name}"))??;
            let answer = Message::from_vec(&buf[..n])?;
            // A late answer to an earlier query is skipped.
            if answer.metadata.id == id {
                break answer;
            }
        };
        samples.push(start.elapsed().as_micros() as u64);
        if answer.answers.is_empty() {
            return Err(format!(
                "{server} gave no address for {name} ({:?})",
                answer.metadata.response_code
            )
            .into());
        }
    }
    print_percentiles(samples);
    Ok(())
}
