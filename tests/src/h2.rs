//! HTTP/2 and gRPC for the personal-intercept scenarios: a server that speaks HTTP/1.1 and
//! HTTP/2 with prior knowledge on one port, as h2c and gRPC apps do, and a client that sends
//! one request with prior knowledge, optionally as a unary gRPC call.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::Result;

/// A gRPC message: the compressed flag, the length, the bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Answers every request as `name` (`hostname: NAME`, or a gRPC message `NAME` with
/// grpc-status 0) and prints `request METHOD PATH` for each.
pub async fn serve(listen: SocketAddr, name: String) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let name = name.clone();
            async move {
                let grpc = is_grpc(request.headers());
                println!("request {} {}", request.method(), request.uri().path());
                let _ = std::io::stdout().flush();
                let _ = request.into_body().collect().await;
                let response = if grpc {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let frames = futures::stream::iter([
                        Ok::<_, Infallible>(Frame::data(grpc_frame(name.as_bytes()))),
                        Ok(Frame::trailers(trailers)),
                    ]);
                    Response::builder()
                        .header("content-type", "application/grpc")
                        .body(http_body_util::StreamBody::new(frames).boxed())
                } else {
                    Response::builder()
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from(format!("hostname: {name}\n"))).boxed())
                };
                Ok::<_, Infallible>(response.expect("a valid response"))
            }
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request over HTTP/2 with prior knowledge; prints the body, or for `grpc` the reply
/// message and `grpc-status: N`.
pub async fn call(url: &str, headers: &[String], grpc: bool) -> Result<()> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = Request::builder().uri(uri.clone());
    for h in headers {
        let (k, v) = h.split_once('=').ok_or("a header is NAME=VALUE")?;
        request = request.header(k, v);
    }
    let request = if grpc {
        request
            .method("POST")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(grpc_frame(b"hello")))?
    } else {
        request.body(Full::new(Bytes::new()))?
    };
    let response = sender.send_request(request).await?;
    let status = response.status();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    let mut body = collected.to_bytes();
    if grpc {
        if body.len() < 5 {
            return Err(format!("no gRPC message in the reply (HTTP {status})").into());
        }
        body.advance(1);
        let len = body.get_u32() as usize;
        let message = String::from_utf8_lossy(&body[..len.min(body.len())]).into_owned();
        let code = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing")
            .to_owned();
        println!("{message}\ngrpc-status: {code}");
    } else {
        print!("{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
