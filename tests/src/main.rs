//! tether-testkit: the small servers and clients the end-to-end tests and the benchmark run
//! inside their network namespaces (an HTTP server, a UDP echo, an authoritative DNS server,
//! a UDP ping, and a throughput/latency probe). No external tools are needed for them.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
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
}

fn parse_record(s: &str) -> std::result::Result<(String, IpAddr), String> {
    let (name, ip) = s.split_once('=').ok_or("expected NAME=IP")?;
    let ip = ip.parse().map_err(|e| format!("{e}"))?;
    Ok((name.trim_end_matches('.').to_ascii_lowercase(), ip))
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
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
        samples.sort_unstable();
        let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
        println!("{} {} {}", pct(0.5), pct(0.9), pct(0.99));
    }
    Ok(())
}
