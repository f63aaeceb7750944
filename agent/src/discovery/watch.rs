//! Keeping discovery current: watchers on the objects the chosen methods read, a table per
//! kind of what each object contributes, and a new [`Discovered`] published whenever the
//! tables say something else than before.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch as channel;

use super::{Discovered, Discovery, PodCidrSource, ServiceCidrSource, extract, prefix, tidy};

/// The first wait between failed probes; it doubles up to [`PROBE_BACKOFF_MAX`].
const PROBE_BACKOFF: Duration = Duration::from_secs(1);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the out-of-range probe is repeated: there is nothing to watch for that method,
/// and a Service range changes rarely (only by reconfiguring the API server).
const RECHECK_OUT_OF_RANGE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ServiceCidrs,
    Nodes,
    Services,
    Pods,
}

/// One watcher event, reduced to what the object contributes: its key and its subnets
/// (single addresses as host-length subnets).
struct Change {
    kind: Kind,
    event: watcher::Event<(String, Vec<IpNet>)>,
}

/// What the objects of one kind contribute, as the last complete list plus later events
/// say.
#[derive(Default)]
struct Table {
    entries: HashMap<String, Vec<IpNet>>,
    /// Filled during a (re)list; replaces `entries` when the list is complete.
    relisting: Option<HashMap<String, Vec<IpNet>>>,
    /// Whether one complete list has arrived; until then the probe's answer stands.
    synced: bool,
}

impl Table {
    fn apply(&mut self, event: watcher::Event<(String, Vec<IpNet>)>) {
        match event {
            watcher::Event::Apply((key, nets)) => {
                self.entries.insert(key, nets);
            }
            watcher::Event::Delete((key, _)) => {
                self.entries.remove(&key);
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply((key, nets)) => {
                self.relisting.get_or_insert_default().insert(key, nets);
            }
            watcher::Event::InitDone => {
                self.entries = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
        }
    }

    fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.entries.values().flatten().copied()
    }
}

/// The tables of the watched kinds, and the probe's answer for what is not (yet) watched.
struct State {
    probed: Discovered,
    tables: HashMap<Kind, Table>,
}

impl State {
    fn current(&self) -> Discovered {
        let synced = |kind| self.tables.get(&kind).filter(|t| t.synced);
        let service_cidrs = match self.probed.service_source {
            ServiceCidrSource::ServiceCidrObjects => {
                synced(Kind::ServiceCidrs).map(|t| tidy(t.nets()))
            }
            ServiceCidrSource::ClusterIps => synced(Kind::Services)
                .map(|t| prefix::covering_prefixes(t.nets().map(|n| n.addr()))),
            ServiceCidrSource::OutOfRangeError => None,
        };
        let pod_cidrs = match self.probed.pod_source {
            PodCidrSource::NodeSpecs => synced(Kind::Nodes).map(|t| tidy(t.nets())),
            PodCidrSource::PodIps => {
                synced(Kind::Pods).map(|t| prefix::covering_prefixes(t.nets().map(|n| n.addr())))
            }
        };
        Discovered {
            service_cidrs: service_cidrs.unwrap_or_else(|| self.probed.service_cidrs.clone()),
            pod_cidrs: pod_cidrs.unwrap_or_else(|| self.probed.pod_cidrs.clone()),
            ..self.probed.clone()
        }
    }
}

pub(super) async fn run(discovery: Discovery, found_tx: channel::Sender<Option<Discovered>>) {
    let probed = tokio::select! {
        probed = probe_until_it_works(&discovery) => probed,
        _ = found_tx.closed() => return,
    };
    log_discovered(&probed, "discovered what to route");
    found_tx.send_replace(Some(probed.clone()));

    let client = &discovery.client;
    let mut changes: SelectAll<BoxStream<'static, Result<Change, (Kind, watcher::Error)>>> =
        SelectAll::new();
    let mut tables = HashMap::new();
    let mut watch_kind = |kind, stream| {
        tables.insert(kind, Table::default());
        changes.push(stream);
    };
    match probed.service_source {
        ServiceCidrSource::ServiceCidrObjects => watch_kind(
            Kind::ServiceCidrs,
            watch::<ServiceCIDR>(
                Api::all(client.clone()),
                Kind::ServiceCidrs,
                extract::service_cidr_nets,
            ),
        ),
        ServiceCidrSource::ClusterIps => watch_kind(
            Kind::Services,
            watch::<Service>(Api::all(client.clone()), Kind::Services, |s| {
                hosts(extract::service_ips(s))
            }),
        ),
        ServiceCidrSource::OutOfRangeError => {}
    }
    match probed.pod_source {
        PodCidrSource::NodeSpecs => watch_kind(
            Kind::Nodes,
            watch::<Node>(
                Api::all(client.clone()),
                Kind::Nodes,
                extract::node_pod_nets,
            ),
        ),
        PodCidrSource::PodIps => watch_kind(
            Kind::Pods,
            watch::<Pod>(Api::all(client.clone()), Kind::Pods, |p| {
                hosts(extract::pod_ips(p))
            }),
        ),
    }
    let recheck_out_of_range = probed.service_source == ServiceCidrSource::OutOfRangeError;
    let mut recheck = tokio::time::interval_at(
        tokio::time::Instant::now() + RECHECK_OUT_OF_RANGE,
        RECHECK_OUT_OF_RANGE,
    );
    let mut state = State { probed, tables };
    let mut published = state.current();
    loop {
        tokio::select! {
            change = changes.next(), if !changes.is_empty() => match change {
                Some(Ok(Change { kind, event })) => {
                    if let Some(table) = state.tables.get_mut(&kind) {
                        table.apply(event);
                    }
                }
                // The backoff paces the retries; the watcher relists when it reconnects.
                Some(Err((kind, e))) => tracing::warn!("watching {kind:?} failed (retrying): {e}"),
                None => {}
            },
            _ = recheck.tick(), if recheck_out_of_range => match discovery.out_of_range_probe().await {
                Ok(Some(nets)) => state.probed.service_cidrs = nets,
                Ok(None) => tracing::warn!("the out-of-range probe no longer names the Service range; keeping the last one"),
                Err(e) => tracing::warn!("repeating the out-of-range probe failed: {e}"),
            },
            _ = found_tx.closed() => return,
        }
        let now = state.current();
        if now != published {
            log_discovered(&now, "what to route changed");
            found_tx.send_replace(Some(now.clone()));
            published = now;
        }
    }
}

async fn probe_until_it_works(discovery: &Discovery) -> Discovered {
    let mut wait = PROBE_BACKOFF;
    loop {
        match discovery.probe().await {
            Ok(found) => return found,
            Err(e) => {
                tracing::warn!("discovery failed (retrying in {wait:?}): {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_BACKOFF_MAX);
            }
        }
    }
}

fn log_discovered(found: &Discovered, what: &str) {
    tracing::info!(
        service_cidrs = ?found.service_cidrs,
        service_source = %found.service_source,
        pod_cidrs = ?found.pod_cidrs,
        pod_source = %found.pod_source,
        "{what}"
    );
}

fn hosts(ips: Vec<std::net::IpAddr>) -> Vec<IpNet> {
    ips.into_iter().map(IpNet::from).collect()
}

/// A watcher on `api` whose events carry only the object's key and contribution.
fn watch<K>(
    api: Api<K>,
    kind: Kind,
    contribution: fn(&K) -> Vec<IpNet>,
) -> BoxStream<'static, Result<Change, (Kind, watcher::Error)>>
where
    K: Resource + Clone + Debug + Send + Sync + k8s_openapi::serde::de::DeserializeOwned + 'static,
{
    let entry = move |obj: K| {
        let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
        let nets = contribution(&obj);
        (key, nets)
    };
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(move |event| Change {
            kind,
            event: match event {
                watcher::Event::Apply(o) => watcher::Event::Apply(entry(o)),
                watcher::Event::Delete(o) => watcher::Event::Delete(entry(o)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitApply(o) => watcher::Event::InitApply(entry(o)),
                watcher::Event::InitDone => watcher::Event::InitDone,
            },
        })
        .map_err(move |e| (kind, e))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_relist_replaces_what_was_there() {
        let mut table = Table::default();
        table.apply(watcher::Event::Init);
        table.apply(watcher::Event::InitApply((
            "/a".into(),
            vec![net("10.96.0.0/16")],
        )));
        assert!(!table.synced, "not synced before the list is complete");
        table.apply(watcher::Event::InitDone);
        table.apply(watcher::Event::Apply((
            "/b".into(),
            vec![net("10.97.0.0/16")],
        )));
        assert_eq!(
            tidy(table.nets()),
            vec![net("10.96.0.0/16"), net("10.97.0.0/16")]
        );
        // A relist after a lost watch: /a is gone, /c is new; until InitDone the old view
        // stands.
        table.apply(watcher::Event::Init);
        table.apply(watcher::Event::InitApply((
            "/c".into(),
            vec![net("10.98.0.0/16")],
        )));
        assert_eq!(table.entries.len(), 2);
        table.apply(watcher::Event::InitApply((
            "/b".into(),
            vec![net("10.97.0.0/16")],
        )));
        table.apply(watcher::Event::InitDone);
        assert_eq!(
            tidy(table.nets()),
            vec![net("10.97.0.0/16"), net("10.98.0.0/16")]
        );
        table.apply(watcher::Event::Delete(("/b".into(), vec![])));
        assert_eq!(tidy(table.nets()), vec![net("10.98.0.0/16")]);
    }

    #[test]
    fn the_probe_stands_until_a_table_is_synced() {
        let probed = Discovered {
            service_cidrs: vec![net("10.96.0.0/24")],
            service_source: ServiceCidrSource::ClusterIps,
            pod_cidrs: vec![net("10.244.0.0/24")],
            pod_source: PodCidrSource::PodIps,
        };
        let mut state = State {
            probed: probed.clone(),
            tables: HashMap::from([
                (Kind::Services, Table::default()),
                (Kind::Pods, Table::default()),
            ]),
        };
        assert_eq!(state.current(), probed);
        let pods = state.tables.get_mut(&Kind::Pods).unwrap();
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply((
            "ns/p1".into(),
            vec![net("10.244.0.7/32")],
        )));
        pods.apply(watcher::Event::InitApply((
            "ns/p2".into(),
            vec![net("10.244.1.9/32")],
        )));
        pods.apply(watcher::Event::InitDone);
        let services = state.tables.get_mut(&Kind::Services).unwrap();
        services.apply(watcher::Event::Init);
        services.apply(watcher::Event::InitApply((
            "ns/s".into(),
            vec![net("10.100.0.1/32")],
        )));
        services.apply(watcher::Event::InitApply((
            "ns/t".into(),
            vec![net("10.96.0.1/32")],
        )));
        services.apply(watcher::Event::InitDone);
        let now = state.current();
        assert_eq!(now.pod_cidrs, vec![net("10.244.0.0/23")]);
        assert_eq!(now.service_cidrs, vec![net("10.96.0.0/13")]);
        assert_eq!(now.service_source, ServiceCidrSource::ClusterIps);
    }
}
