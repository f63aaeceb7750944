//! Direct mode: a manager at a known address, with a token read from a file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use tokio::net::TcpStream;

use super::{DIAL_TIMEOUT, DialError, Dialed, Dialer};
use crate::config::DirectTarget;

pub struct DirectDialer {
    pub target: DirectTarget,
}

impl Dialer for DirectDialer {
    async fn dial(&mut self) -> Result<Dialed, DialError> {
        // Read on every dial: a rotated token is picked up on reconnect.
        let token = read_token(&self.target.token_file)?;
        // Resolved on every dial too: a name may move to another address.
        let addr = resolve(&self.target.manager).map_err(|source| DialError::ManagerAddress {
            address: self.target.manager.clone(),
            source,
        })?;
        let unreachable = |reason: String| DialError::Unreachable {
            manager: addr.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {DIAL_TIMEOUT:?}"))),
        };
        let _ = stream.set_nodelay(true);
        Ok(Dialed {
            io: Box::new(stream),
            token,
            manager: addr.to_string(),
            peer_ip: Some(addr.ip()),
        })
    }
}

/// `HOST:PORT` as an address: the first one the name resolves to.
fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

fn read_token(path: &PathBuf) -> Result<String, DialError> {
    let token = std::fs::read_to_string(path).map_err(|source| DialError::TokenFile {
        path: path.clone(),
        source,
    })?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(DialError::EmptyToken(path.clone()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  secret\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "secret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_token(&path), Err(DialError::EmptyToken(_))));
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_token(&missing),
            Err(DialError::TokenFile { .. })
        ));
    }

    #[test]
    fn addresses_resolve_once_per_dial() {
        assert_eq!(
            resolve("127.0.0.1:8022").unwrap(),
            "127.0.0.1:8022".parse().unwrap()
        );
        assert!(resolve("no-port").is_err());
    }
}
