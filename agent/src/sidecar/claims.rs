//! The claims on the sidecar's ports: who holds what, with which [`Route`], and the counters
//! `tether list` shows.
//!
//! Each port keeps its claims in an `Arc<[Claim]>` replaced on every change, so a connection
//! or request takes a snapshot with one reference count and no lock held while it routes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderMap;
use regex::Regex;
use tether_tunnel::Session;
use tether_tunnel::wire::intercept::{
    ClaimStatus, Holder, PortRoutes, PortStatus, SidecarReply, SidecarRequest, SidecarRoutes,
    SidecarStatus,
};
use tether_tunnel::wire::route::{Filter, Mode, PathKind, Pattern, Route, RouteError, whole};
use tokio::sync::Semaphore;

/// Mirrored requests (or connections) in flight per mirror; beyond it, copies are dropped.
const MIRROR_IN_FLIGHT: usize = 64;

/// A filter, compiled.
pub struct Matcher {
    headers: Vec<(http::HeaderName, Test)>,
    path: Option<PathTest>,
}

enum Test {
    Exact(String),
    Regex(Regex),
}

enum PathTest {
    Prefix(String),
    Equal(String),
    Regex(Regex),
}

impl Matcher {
    pub fn compile(filter: &Filter) -> Result<Matcher, RouteError> {
        filter.validate()?;
        let test = |p: &Pattern| -> Result<Test, RouteError> {
            Ok(if p.regex {
                Test::Regex(whole(&p.value)?)
            } else {
                Test::Exact(p.value.clone())
            })
        };
        let mut headers = Vec::new();
        for h in &filter.headers {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                RouteError::HeaderName {
                    name: h.name.clone(),
                }
            })?;
            headers.push((name, test(&h.value)?));
        }
        let path = match &filter.path {
            None => None,
            Some(p) => Some(match p.kind {
                PathKind::Prefix => PathTest::Prefix(p.value.clone()),
                PathKind::Equal => PathTest::Equal(p.value.clone()),
                PathKind::Regex => PathTest::Regex(whole(&p.value)?),
            }),
        };
        Ok(Matcher { headers, path })
    }

    /// Whether a request with these headers and path passes every test. A header given
    /// several times passes when one of its values does.
    pub fn matches(&self, headers: &HeaderMap, path: &str) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(PathTest::Prefix(p)) => path.starts_with(p.as_str()),
            Some(PathTest::Equal(p)) => path == p,
            Some(PathTest::Regex(r)) => r.is_match(path),
        };
        path_ok
            && self.headers.iter().all(|(name, test)| {
                headers.get_all(name).iter().any(|v| match test {
                    Test::Exact(want) => v.as_bytes() == want.as_bytes(),
                    Test::Regex(r) => v.to_str().is_ok_and(|v| r.is_match(v)),
                })
            })
    }
}

#[derive(Default)]
pub struct ClaimCounters {
    pub matched: AtomicU64,
    pub dropped: AtomicU64,
    /// A mirror whose laptop refused a copy gets none until then (ms since the sidecar
    /// started), so an absent server costs the pod nothing but a counter.
    resting_until: AtomicU64,
}

/// How long a mirror rests after its laptop refused a copy.
const MIRROR_REST: std::time::Duration = std::time::Duration::from_secs(1);

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A claim: the session a port's matching traffic goes to.
#[derive(Clone)]
pub struct Claim {
    pub session_id: u64,
    pub holder: Holder,
    pub session: Session,
    pub route: Route,
    pub matcher: Arc<Matcher>,
    pub counters: Arc<ClaimCounters>,
    /// A mirror's copies in flight.
    pub slots: Arc<Semaphore>,
    /// A mirror's idle connections to its laptop.
    pub copies: Arc<super::mirror::CopyPool>,
}

impl Claim {
    pub fn steals(&self) -> bool {
        self.route.mode == Mode::Steal
    }

    pub fn mirrors(&self) -> bool {
        self.route.mode == Mode::Mirror
    }

    pub fn count(&self) {
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
    }

    pub fn drop_copy(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A mirror's laptop refused a copy: copies are dropped for a while without trying.
    pub fn rest(&self) {
        let until = now_ms() + MIRROR_REST.as_millis() as u64;
        self.counters.resting_until.store(until, Ordering::Relaxed);
    }

    pub fn resting(&self) -> bool {
        now_ms() < self.counters.resting_until.load(Ordering::Relaxed)
    }
}

pub struct Port {
    pub listen: u16,
    claims: Arc<[Claim]>,
    forwarded: AtomicU64,
    not_http: AtomicU64,
}

/// The ports, by app port.
#[derive(Default)]
pub struct Ports {
    by_app: Mutex<BTreeMap<u16, Port>>,
    pub next_session: AtomicU64,
    /// The app container does not run (`tether intercept --replace`): what no claim takes
    /// is refused.
    replace: bool,
}

impl Ports {
    pub fn new(replace: bool) -> Ports {
        Ports {
            replace,
            ..Ports::default()
        }
    }

    pub fn replaced(&self) -> bool {
        self.replace
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u16, Port>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.by_app.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, listen: u16, app: u16) {
        self.lock().insert(
            app,
            Port {
                listen,
                claims: Arc::from(Vec::new()),
                forwarded: AtomicU64::new(0),
                not_http: AtomicU64::new(0),
            },
        );
    }

    /// The port's claims now.
    pub fn claims_of(&self, app: u16) -> Arc<[Claim]> {
        self.lock()
            .get(&app)
            .map_or_else(|| Arc::from(Vec::new()), |p| p.claims.clone())
    }

    /// One connection or request answered by the app.
    pub fn count_forwarded(&self, app: u16) {
        if let Some(p) = self.lock().get(&app) {
            p.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_not_http(&self, app: u16) {
        if let Some(p) = self.lock().get(&app) {
            p.not_http.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn handle(
        &self,
        session_id: u64,
        session: &Session,
        request: SidecarRequest,
    ) -> SidecarReply {
        match request {
            SidecarRequest::Claim { port, holder } => {
                self.claim(session_id, session, port, holder, Route::GLOBAL, false)
            }
            SidecarRequest::ClaimRoute {
                port,
                holder,
                route,
            } => self.claim(session_id, session, port, holder, route, true),
            SidecarRequest::Release { port } => {
                let mut ports = self.lock();
                if let Some(p) = ports.get_mut(&port) {
                    let before = p.claims.len();
                    p.claims = p
                        .claims
                        .iter()
                        .filter(|c| c.session_id != session_id)
                        .cloned()
                        .collect();
                    if p.claims.len() != before {
                        tracing::info!(port, "port released");
                    }
                }
                SidecarReply::Released { port }
            }
            SidecarRequest::Status => SidecarReply::Status(self.status()),
            SidecarRequest::Routes => SidecarReply::Routes(self.routes()),
            SidecarRequest::Ping { nonce } => SidecarReply::Pong { nonce },
        }
    }

    fn claim(
        &self,
        session_id: u64,
        session: &Session,
        port: u16,
        holder: Holder,
        route: Route,
        routed: bool,
    ) -> SidecarReply {
        let matcher = match Matcher::compile(&route.filter) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                return SidecarReply::Refused {
                    port,
                    reason: e.to_string(),
                };
            }
        };
        let mut ports = self.lock();
        let known: Vec<u16> = ports.keys().copied().collect();
        let Some(p) = ports.get_mut(&port) else {
            return SidecarReply::NoSuchPort { port, ports: known };
        };
        let others = p.claims.iter().filter(|c| c.session_id != session_id);
        if let Some(c) = others.clone().find(|c| c.route.conflicts_with(&route)) {
            // A laptop that sent the old `Claim` knows only `Held`.
            return if routed {
                SidecarReply::Overlaps {
                    port,
                    by: c.holder.clone(),
                    route: c.route.clone(),
                }
            } else {
                SidecarReply::Held {
                    port,
                    by: c.holder.clone(),
                }
            };
        }
        tracing::info!(port, %holder, %route, "port claimed");
        let claim = Claim {
            session_id,
            holder,
            session: session.clone(),
            route,
            matcher,
            counters: Arc::default(),
            slots: Arc::new(Semaphore::new(MIRROR_IN_FLIGHT)),
            copies: Arc::default(),
        };
        p.claims = others.cloned().chain([claim]).collect();
        SidecarReply::Claimed { port }
    }

    fn status(&self) -> SidecarStatus {
        let ports = self.lock();
        SidecarStatus {
            ports: ports
                .iter()
                .map(|(app, p)| {
                    let steal = p.claims.iter().find(|c| c.steals());
                    PortStatus {
                        listen: p.listen,
                        app: *app,
                        holder: steal.map(|c| c.holder.clone()),
                        intercepted: p
                            .claims
                            .iter()
                            .filter(|c| c.steals())
                            .map(|c| c.counters.matched.load(Ordering::Relaxed))
                            .sum(),
                        forwarded: p.forwarded.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }

    fn routes(&self) -> SidecarRoutes {
        let ports = self.lock();
        SidecarRoutes {
            ports: ports
                .iter()
                .map(|(app, p)| PortRoutes {
                    listen: p.listen,
                    app: *app,
                    claims: p
                        .claims
                        .iter()
                        .map(|c| ClaimStatus {
                            holder: c.holder.clone(),
                            route: c.route.clone(),
                            matched: c.counters.matched.load(Ordering::Relaxed),
                            dropped: c.counters.dropped.load(Ordering::Relaxed),
                        })
                        .collect(),
                    forwarded: p.forwarded.load(Ordering::Relaxed),
                    not_http: p.not_http.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Gives every port of a session that ended back to the app.
    pub fn release_session(&self, session_id: u64) {
        for (app, p) in self.lock().iter_mut() {
            if p.claims.iter().any(|c| c.session_id == session_id) {
                tracing::info!(port = app, "the laptop went away; its claims are dropped");
                p.claims = p
                    .claims
                    .iter()
                    .filter(|c| c.session_id != session_id)
                    .cloned()
                    .collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_tunnel::wire::route::{HeaderMatch, PathMatch};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn matchers_test_headers_case_insensitively_and_paths() {
        let filter = Filter {
            headers: vec![HeaderMatch {
                name: "x-dev".into(),
                value: Pattern::exact("one"),
            }],
            path: Some(PathMatch::prefix("/v2")),
        };
        let m = Matcher::compile(&filter).unwrap();
        assert!(m.matches(&headers(&[("X-Dev", "one")]), "/v2/users"));
        assert!(!m.matches(&headers(&[("x-dev", "one")]), "/v1/users"));
        assert!(!m.matches(&headers(&[("x-dev", "One")]), "/v2"));
        assert!(m.matches(&headers(&[("x-dev", "two"), ("x-dev", "one")]), "/v2"));
        assert!(!m.matches(&headers(&[]), "/v2"));
        let any = Matcher::compile(&Filter::default()).unwrap();
        assert!(any.matches(&headers(&[]), "/"));
        let re = Matcher::compile(&Filter {
            headers: Vec::new(),
            path: Some(PathMatch::regex("/items/[0-9]+")),
        })
        .unwrap();
        assert!(re.matches(&headers(&[]), "/items/42"));
        assert!(!re.matches(&headers(&[]), "/items/42/x"));
    }
}
