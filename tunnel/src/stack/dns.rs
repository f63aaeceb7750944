//! The laptop's DNS server, reached at an address inside the TUN subnet.
//!
//! Cluster names (under the cluster domain) are answered by the manager through the tunnel.
//! A two-label name such as `web.shop` is first tried as the Service `web.shop.svc.<domain>`,
//! which is what a pod's search path would find; every other name goes to the resolvers the
//! machine had before tether, so nothing outside the cluster changes. Short names are
//! completed by the system resolver with the search path tether writes. Names in
//! [`hosts::LocalHosts`] (Ingress hosts) are answered here, before or after public DNS.

pub mod hosts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::packet::udp_packet;
use crate::dns_client;
use crate::session::Session;
use crate::wire::flow::FlowRequest;
use crate::wire::frame::{MAX_FRAME, expect_frame, write_frame};

const TUNNEL_TIMEOUT: Duration = Duration::from_secs(5);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How the laptop's DNS server behaves.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Address (inside the TUN subnet) and port the server answers on.
    pub listen: SocketAddr,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// The resolvers the machine used before tether; they answer non-cluster names.
    pub upstream: Vec<SocketAddr>,
    /// Names answered here (outside the cluster domain).
    pub hosts: hosts::LocalHosts,
}

/// Where a query goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Cluster,
    /// Try the cluster under this name first, then upstream.
    ClusterFirst(String),
    Upstream,
}

/// Decides where a (lower-case, absolute) query name is answered.
pub fn route(name: &str, domain: &str) -> Route {
    let name = name.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    if name == domain || name.strip_suffix(domain).is_some_and(|p| p.ends_with('.')) {
        return Route::Cluster;
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() == 2 && labels.iter().all(|l| !l.is_empty()) {
        return Route::ClusterFirst(format!("{name}.svc.{domain}."));
    }
    Route::Upstream
}

#[derive(Clone)]
pub struct DnsServer {
    config: Arc<DnsConfig>,
    session: Session,
    tun: Arc<tun::AsyncDevice>,
}

impl DnsServer {
    pub fn new(config: DnsConfig, session: Session, tun: Arc<tun::AsyncDevice>) -> Self {
        DnsServer {
            config: Arc::new(config),
            session,
            tun,
        }
    }

    pub fn listens_on(&self, addr: SocketAddr) -> bool {
        self.config.listen == addr
    }

    /// Answers one query from `client` in the background.
    pub fn on_query(&self, client: SocketAddr, query: &[u8]) {
        let this = self.clone();
        let query = query.to_vec();
        tokio::spawn(async move {
            let Some(response) = this.answer(&query, Transport::Udp).await else {
                return;
            };
            if let Some(packet) = udp_packet(this.config.listen, client, &response)
                && let Err(e) = this.tun.send(&packet).await
            {
                tracing::debug!("could not send DNS answer: {e}");
            }
        });
    }

    /// Serves DNS over TCP on one connection until the client closes it.
    pub async fn serve_tcp<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        self,
        mut stream: S,
    ) {
        while let Ok(Some(query)) = dns_client::read_tcp_message(&mut stream).await {
            let Some(response) = self.answer(&query, Transport::Tcp).await else {
                return;
            };
            if dns_client::write_tcp_message(&mut stream, &response)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The response to a raw query; `None` when the query is too broken to answer. Over UDP
    /// an answer larger than the client accepts is truncated (TC set), so it retries over
    /// TCP, as with any DNS server.
    pub async fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let (message, name) = match parse_query(query) {
            Ok(parsed) => parsed,
            Err(Some(message)) => return reply_code(&message, ResponseCode::FormErr),
            Err(None) => return None,
        };
        let route = route(&name, &self.config.domain);
        let local = match route {
            Route::Cluster => None,
            _ => self.config.hosts.lookup(&name),
        };
        let answer = match (local, route) {
            (Some(ip), _) => self.local_or_public(&message, query, ip, transport).await,
            (None, Route::Cluster) => self.via_tunnel(query).await,
            (None, Route::ClusterFirst(cluster_name)) => {
                match self.as_cluster_name(&message, &cluster_name).await {
                    Some(found) => Some(found),
                    None => self.upstream(query, transport).await,
                }
            }
            (None, Route::Upstream) => self.upstream(query, transport).await,
        };
        let answer = answer.or_else(|| reply_code(&message, ResponseCode::ServFail))?;
        match transport {
            Transport::Udp => Some(fit_for_udp(&message, answer)),
            Transport::Tcp => Some(answer),
        }
    }

    /// A local host's answer, unless public DNS knows the name and takes precedence.
    async fn local_or_public(
        &self,
        message: &Message,
        query: &[u8],
        ip: std::net::Ipv4Addr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        if self.config.hosts.precedence() == hosts::Precedence::PublicFirst
            && let Some(public) = self.upstream(query, transport).await
            && Message::from_vec(&public).is_ok_and(|m| {
                m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
            })
        {
            return Some(public);
        }
        local_answer(message, ip)
    }

    /// Asks the cluster for `cluster_name`; returns an answer under the original name when
    /// the cluster knows it.
    async fn as_cluster_name(&self, original: &Message, cluster_name: &str) -> Option<Vec<u8>> {
        let question = original.queries.first()?;
        let cluster = Name::from_ascii(cluster_name).ok()?;
        let mut rewritten = original.clone();
        rewritten.queries[0].set_name(cluster.clone());
        let response = self.via_tunnel(&rewritten.to_vec().ok()?).await?;
        let mut response = Message::from_vec(&response).ok()?;
        if response.metadata.response_code != ResponseCode::NoError || response.answers.is_empty() {
            return None;
        }
        response.queries = original.queries.clone();
        for record in &mut response.answers {
            if record.name == cluster {
                record.name = question.name().clone();
            }
        }
        response.to_vec().ok()
    }

    async fn via_tunnel(&self, query: &[u8]) -> Option<Vec<u8>> {
        let exchange = async {
            let mut stream = self.session.open(&FlowRequest::Dns).await.ok()?;
            write_frame(&mut stream, query).await.ok()?;
            expect_frame(&mut stream, MAX_FRAME, "DNS response")
                .await
                .ok()
        };
        match tokio::time::timeout(TUNNEL_TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!("the manager did not answer a DNS query in {TUNNEL_TIMEOUT:?}");
                None
            }
        }
    }

    async fn upstream(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        for server in &self.config.upstream {
            let answer = match transport {
                Transport::Udp => dns_client::udp(*server, query, UPSTREAM_TIMEOUT).await,
                Transport::Tcp => dns_client::tcp(*server, query, UPSTREAM_TIMEOUT).await,
            };
            match answer {
                Ok(answer) => return Some(answer),
                Err(e) => tracing::debug!(%server, "upstream DNS failed: {e}"),
            }
        }
        None
    }
}

/// How a query reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The largest UDP answer a client accepts: its EDNS payload size, else 512 bytes.
fn udp_limit(query: &Message) -> usize {
    query
        .edns
        .as_ref()
        .map(|edns| usize::from(edns.max_payload()).max(512))
        .unwrap_or(512)
}

/// Truncates an answer that is too large for the client's UDP limit.
fn fit_for_udp(query: &Message, answer: Vec<u8>) -> Vec<u8> {
    if answer.len() <= udp_limit(query) {
        return answer;
    }
    Message::from_vec(&answer)
        .ok()
        .and_then(|full| full.truncate().to_vec().ok())
        .unwrap_or(answer)
}

/// Decodes a query and its (lower-case, absolute) question name. `Err(Some(_))` is a
/// message without a question (answered with FORMERR); `Err(None)` is not DNS at all.
pub fn parse_query(query: &[u8]) -> Result<(Message, String), Option<Box<Message>>> {
    let message = Message::from_vec(query).map_err(|_| None)?;
    let Some(question) = message.queries.first() else {
        return Err(Some(Box::new(message)));
    };
    let name = question.name().to_ascii().to_ascii_lowercase();
    Ok((message, name))
}

/// An authoritative answer with `ip` for an A query; no records (NODATA) for any other
/// type, so that a client asking AAAA first falls back to A.
fn local_answer(request: &Message, ip: std::net::Ipv4Addr) -> Option<Vec<u8>> {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    let question = request.queries.first()?;
    if question.query_type() == RecordType::A {
        // A short TTL: the Ingress may change while connected.
        reply.answers.push(Record::from_rdata(
            question.name().clone(),
            5,
            RData::A(A(ip)),
        ));
    }
    reply.to_vec().ok()
}

fn reply_code(request: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.queries = request.queries.clone();
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "cluster.local";
        assert_eq!(route("web.shop.svc.cluster.local.", d), Route::Cluster);
        assert_eq!(route("cluster.local.", d), Route::Cluster);
        assert_eq!(
            route("web.shop.", d),
            Route::ClusterFirst("web.shop.svc.cluster.local.".into())
        );
        assert_eq!(
            route("example.com.", d),
            Route::ClusterFirst("example.com.svc.cluster.local.".into())
        );
        assert_eq!(route("www.example.com.", d), Route::Upstream);
        // A suffix match must end at a label boundary.
        assert_eq!(route("www.notcluster.local.", d), Route::Upstream);
        assert_eq!(route("localhost.", d), Route::Upstream);
    }
}
