//! Dialling for the doctor. [`Inside`] is a session of the doctor's own with the traffic
//! manager (the same port-forward and token the daemon uses), so what it dials is dialled
//! from inside the cluster whether or not this machine is connected, and nothing in the
//! cluster changes. [`from_laptop`] dials through this machine's own network, which the
//! connection routes into the tunnel.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tether_tunnel::wire::flow::{FlowReply, FlowRequest};
use tether_tunnel::wire::frame::{MAX_FRAME, expect_frame, write_frame};
use tether_tunnel::{FlowStream, Session, SessionError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::cluster::Cluster;
use crate::daemon::dial::kubernetes::KubeDialer;
use crate::daemon::dial::{self, DialError, Dialer};

/// How long one dial, request or query may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The request to make once connected.
#[derive(Debug, Clone, Copy)]
pub struct Http<'a> {
    pub host: &'a str,
    pub path: &'a str,
}

/// What a dial found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The port accepted the connection (and said nothing HTTP, or was not asked).
    Connected,
    /// An HTTP GET was answered with this status.
    Http(u16),
}

/// A session with the manager, for dials from inside the cluster.
pub struct Inside {
    session: Session,
    // The session lasts as long as its control stream is open.
    _control: FlowStream,
    pub dns_domain: String,
}

impl Inside {
    /// Opens a session with the manager in `namespace`. The error says what is missing.
    pub async fn open(cluster: &Cluster, namespace: &str) -> Result<Inside, String> {
        let mut dialer = KubeDialer::new(cluster.clone(), namespace.to_owned()).await;
        let opened = match dialer.dial().await {
            Ok(dialed) => dial::open(dialed).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(o) => Ok(Inside {
                session: o.session,
                _control: o.control,
                dns_domain: o.cluster.dns_domain,
            }),
            Err(DialError::TokenSecret { source, .. }) if matches!(&source, kube::Error::Api(s) if s.code == 404) => {
                Err(format!(
                    "the traffic manager is not installed in namespace {namespace}; `tether connect` installs it"
                ))
            }
            Err(e) => Err(format!("cannot reach the traffic manager: {e}")),
        }
    }

    /// A TCP connection to `target` from the manager's pod; with `http`, also a GET.
    pub async fn check(
        &self,
        target: SocketAddr,
        http: Option<Http<'_>>,
    ) -> Result<Answer, String> {
        let stream = tokio::time::timeout(TIMEOUT, self.session.dial(&FlowRequest::Tcp { target }))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|e| match e {
                SessionError::Dial { reply, .. } => refusal(&reply),
                other => format!("the tunnel failed: {other}"),
            })?;
        match http {
            Some(http) => Ok(http_get(stream, http).await),
            None => Ok(Answer::Connected),
        }
    }

    /// The A records (or the CNAME target) the cluster's DNS gives for `name`.
    pub async fn resolve(&self, name: &str) -> Result<Resolved, String> {
        let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| format!("{name} is not a DNS name: {e}"))?;
        let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(fqdn, RecordType::A));
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let exchange = async {
            let mut stream = self
                .session
                .open(&FlowRequest::Dns)
                .await
                .map_err(|e| e.to_string())?;
            write_frame(&mut stream, &bytes)
                .await
                .map_err(|e| e.to_string())?;
            expect_frame(&mut stream, MAX_FRAME, "DNS response")
                .await
                .map_err(|e| e.to_string())
        };
        let answer = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("the cluster's DNS did not answer within {TIMEOUT:?}"))??;
        let answer = Message::from_vec(&answer).map_err(|e| e.to_string())?;
        let mut resolved = Resolved::default();
        for record in &answer.answers {
            match &record.data {
                RData::A(a) => resolved.addresses.push(IpAddr::V4(a.0)),
                RData::CNAME(c) => resolved.cname = Some(c.0.to_string()),
                _ => {}
            }
        }
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(format!("{}", answer.metadata.response_code));
        }
        Ok(resolved)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Resolved {
    pub addresses: Vec<IpAddr>,
    pub cname: Option<String>,
}

/// A TCP connection to `target` from this machine; with `http`, also a GET.
pub async fn from_laptop(target: SocketAddr, http: Option<Http<'_>>) -> Result<Answer, String> {
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| refusal(&FlowReply::from_io_error(&e)))?;
    match http {
        Some(http) => Ok(http_get(stream, http).await),
        None => Ok(Answer::Connected),
    }
}

/// The addresses this machine's resolver gives for `name`.
pub async fn resolve_from_laptop(name: &str) -> Result<Vec<IpAddr>, String> {
    let found = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(found.map(|a| a.ip()).collect())
}

fn refusal(reply: &FlowReply) -> String {
    match reply {
        FlowReply::Ready => "connected".into(),
        FlowReply::Refused => "connection refused: nothing listens there".into(),
        FlowReply::Unreachable => "unreachable: no host answers at that address".into(),
        FlowReply::TimedOut => "timed out: no answer, not even a refusal".into(),
        FlowReply::Failed { reason } => reason.clone(),
    }
}

/// A GET on an open connection: its status, or [`Answer::Connected`] when what answers
/// does not speak HTTP (a connection that works is still the answer that matters).
async fn http_get<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    http: Http<'_>,
) -> Answer {
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .ok()?;
        let driver = tokio::spawn(connection);
        let request = http::Request::get(http.path)
            .header(http::header::HOST, http.host)
            .header(
                http::header::USER_AGENT,
                concat!("tether-doctor/", env!("CARGO_PKG_VERSION")),
            )
            .body(String::new())
            .ok()?;
        let status = sender.send_request(request).await.ok()?.status().as_u16();
        driver.abort();
        Some(status)
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Some(status)) => Answer::Http(status),
        _ => Answer::Connected,
    }
}

fn rand_id() -> u16 {
    let mut id = [0u8; 2];
    // A fixed id would do as well: the stream carries one exchange only.
    let _ = getrandom::fill(&mut id);
    u16::from_be_bytes(id)
}
