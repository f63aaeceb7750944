//! Installing, upgrading and removing the traffic manager.
//!
//! [`ensure_manager`] is idempotent: it reads each object of the install contract and writes
//! only what is missing or different, so a second run changes nothing (every resourceVersion
//! stays). The sandbox, like some API proxies, has no server-side apply, so this is plain
//! get + create/replace; replacing carries the resourceVersion it read, and a conflict
//! (someone else wrote in between) reads again and retries.
//!
//! Versions: an older manager (by its `app.kubernetes.io/version` label) is upgraded by
//! replacing the Deployment; a newer one with our major.minor is used as it is (patch releases
//! keep the protocol); any other newer one is an error that says how to resolve it.
//!
//! [`uninstall`] deletes only objects labelled `app.kubernetes.io/part-of: tether`, the
//! namespace only if tether created it, and the cluster-wide RBAC only if it binds this
//! namespace's manager; then it waits until they are gone.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::client::{Cluster, describe};
use super::manifests::{self, LABEL_MANAGED_BY, LABEL_PART_OF, LABEL_VERSION, NAME, VERSION};
use super::progress::Progress;
use super::rollout::{self, RolloutError};

/// How long uninstall waits for the deleted objects to disappear.
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts at a replace that keeps hitting conflicts before giving up.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The manager's namespace (`tether` by default).
    pub namespace: String,
    /// An image instead of `ghcr.io/tether-dev/tether-agent:<version>`.
    pub image: Option<String>,
    /// How long to wait for a Ready manager pod.
    pub timeout: Duration,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: manifests::DEFAULT_NAMESPACE.into(),
            image: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A Ready manager.
#[derive(Clone, PartialEq, Eq)]
pub struct Manager {
    pub namespace: String,
    /// The Ready pod the wait found (the transport looks again when it connects).
    pub pod: String,
    /// The manager's version (ours, or a compatible newer one).
    pub version: String,
    /// The session token the manager expects.
    pub token: String,
}

impl Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("namespace", &self.namespace)
            .field("pod", &self.pod)
            .field("version", &self.version)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What [`uninstall`] deleted, as `kind/name` (namespaced ones as `kind/namespace/name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub objects: Vec<String>,
}

#[derive(Debug, Error)]
pub enum InstallError {
    #[error(
        "your credentials may not {action}: {message}. Installing the manager needs rights to create namespaces, RBAC and Deployments; ask a cluster admin to install it once with `tether connect`, and to grant you what `tether rbac` prints."
    )]
    Forbidden { action: String, message: String },
    #[error("cannot {action}: {reason}")]
    Api {
        action: String,
        reason: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind}/{name} exists but was not created by tether (no {LABEL_PART_OF}=tether label). Remove it, or install the manager into another namespace with --manager-namespace."
    )]
    NotOurs { kind: &'static str, name: String },
    #[error(
        "the traffic manager in namespace {namespace} is version {installed}, which this tether ({ours}) cannot talk to. Upgrade tether to {installed}, or remove the manager with `tether uninstall` and connect again."
    )]
    Incompatible {
        namespace: String,
        installed: String,
        ours: String,
    },
    #[error(
        "namespace {0} is being deleted (perhaps by `tether uninstall`). Wait until it is gone, then connect again."
    )]
    NamespaceTerminating(String),
    #[error("{source}. See `kubectl -n {namespace} describe deployment {NAME}` for details.")]
    Rollout {
        namespace: String,
        #[source]
        source: RolloutError,
    },
    #[error("{what} did not disappear within {} s", .waited.as_secs())]
    DeleteTimeout { what: String, waited: Duration },
    #[error("cannot generate a session token: {0}")]
    Random(getrandom::Error),
}

/// Makes sure a compatible manager runs in `opts.namespace` and is Ready; installs or
/// upgrades it when needed. `progress` hears about each step.
pub async fn ensure_manager(
    cluster: &Cluster,
    opts: &InstallOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manager, InstallError> {
    let ns = opts.namespace.as_str();
    let client = cluster.client.clone();
    progress(Progress::Checking {
        namespace: ns.into(),
    });
    ensure_namespace(&Api::all(client.clone()), ns, progress).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if get(&accounts, NAME).await?.is_none() {
        create(&accounts, &manifests::service_account(ns), progress).await?;
    }
    ensure_cluster_role(&Api::all(client.clone()), progress).await?;
    ensure_binding(&Api::all(client.clone()), ns, progress).await?;
    let token = ensure_token(&Api::namespaced(client.clone(), ns), ns, progress).await?;
    let (version, digest) =
        ensure_deployment(&Api::namespaced(client.clone(), ns), opts, progress).await?;
    let pod =
        rollout::wait_for_manager(client, ns, digest.as_deref(), opts.timeout, &mut |status| {
            progress(Progress::Waiting { status })
        })
        .await
        .map_err(|source| InstallError::Rollout {
            namespace: ns.into(),
            source,
        })?;
    let pod = pod.name_any();
    progress(Progress::Ready {
        pod: pod.clone(),
        version: version.clone(),
    });
    Ok(Manager {
        namespace: ns.into(),
        pod,
        version,
        token,
    })
}

async fn ensure_namespace(
    api: &Api<Namespace>,
    ns: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    match get(api, ns).await? {
        Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
            Err(InstallError::NamespaceTerminating(ns.into()))
        }
        Some(_) => Ok(()),
        None => create(api, &manifests::namespace(ns), progress).await,
    }
}

async fn ensure_cluster_role(
    api: &Api<ClusterRole>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    let desired = manifests::cluster_role();
    match get(api, NAME).await? {
        None => create(api, &desired, progress).await,
        Some(existing) => {
            ours(&existing, "clusterrole")?;
            if existing.rules != desired.rules {
                replace(api, desired, progress).await?;
            }
            Ok(())
        }
    }
}

async fn ensure_binding(
    api: &Api<ClusterRoleBinding>,
    ns: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    let desired = manifests::cluster_role_binding(ns);
    match get(api, NAME).await? {
        None => create(api, &desired, progress).await,
        Some(existing) => {
            ours(&existing, "clusterrolebinding")?;
            if existing.role_ref != desired.role_ref {
                // roleRef cannot change in place.
                delete_and_wait(api, &existing).await?;
                create(api, &desired, progress).await
            } else if existing.subjects != desired.subjects {
                replace(api, desired, progress).await
            } else {
                Ok(())
            }
        }
    }
}

/// The token of the Secret, created once with 32 random bytes and reused from then on (a
/// running manager and connected laptops keep working across installs).
async fn ensure_token(
    api: &Api<Secret>,
    ns: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, InstallError> {
    let existing = get(api, manifests::TOKEN_SECRET).await?;
    let stored = existing.as_ref().and_then(manifests::token_of);
    if let Some(token) = stored {
        return Ok(token);
    }
    let token = new_token()?;
    let desired = manifests::token_secret(ns, &token);
    match existing {
        None => create(api, &desired, progress).await?,
        Some(_) => replace(api, desired, progress).await?,
    }
    Ok(token)
}

fn new_token() -> Result<String, InstallError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(InstallError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates, upgrades or accepts the Deployment; returns the manager version that will run and
/// the template digest its Ready pods carry (none for a manager installed otherwise).
async fn ensure_deployment(
    api: &Api<Deployment>,
    opts: &InstallOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(String, Option<String>), InstallError> {
    let image = opts.image.clone().unwrap_or_else(manifests::default_image);
    let desired = manifests::deployment(&opts.namespace, &image, VERSION);
    let digest = manifests::recorded_digest(&desired.metadata).map(String::from);
    let Some(existing) = get(api, NAME).await? else {
        create(api, &desired, progress).await?;
        return Ok((VERSION.into(), digest));
    };
    ours(&existing, "deployment")?;
    let installed = manifests::label(&existing.metadata, LABEL_VERSION).unwrap_or("unknown");
    let installed_digest = manifests::recorded_digest(&existing.metadata).map(String::from);
    match decide(installed, opts.image.is_some(), installed_digest == digest) {
        Decision::Keep => {
            progress(Progress::UsingInstalled {
                version: installed.into(),
            });
            Ok((installed.into(), installed_digest))
        }
        Decision::Incompatible => Err(InstallError::Incompatible {
            namespace: opts.namespace.clone(),
            installed: installed.into(),
            ours: VERSION.into(),
        }),
        Decision::Replace => {
            progress(Progress::Upgrading {
                from: installed.into(),
                to: VERSION.into(),
            });
            replace(api, desired, progress).await?;
            Ok((VERSION.into(), digest))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Keep,
    Replace,
    Incompatible,
}

/// What to do with an installed manager of version `installed` (a label, maybe garbage).
/// An explicit image is the user's choice and always rolls out; otherwise a newer manager
/// wins when it speaks our protocol (same major.minor).
fn decide(installed: &str, explicit_image: bool, same_template: bool) -> Decision {
    let ours = semver::Version::parse(VERSION).expect("the crate version is semver");
    match semver::Version::parse(installed) {
        _ if same_template => Decision::Keep,
        _ if explicit_image => Decision::Replace,
        Ok(v) if v > ours && (v.major, v.minor) == (ours.major, ours.minor) => Decision::Keep,
        Ok(v) if v > ours => Decision::Incompatible,
        // Older, equal (with another template: a rebuilt tether), or unparsable: ours wins.
        _ => Decision::Replace,
    }
}

/// Deletes the manager from `namespace` and waits until it is gone. Nothing installed is
/// not an error: the result lists nothing.
pub async fn uninstall(cluster: &Cluster, namespace: &str) -> Result<Removed, InstallError> {
    let client = cluster.client.clone();
    let mut removed = Removed::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    delete_ours(&deployments, NAME, &mut removed).await?;
    delete_ours(&secrets, manifests::TOKEN_SECRET, &mut removed).await?;
    delete_ours(&accounts, NAME, &mut removed).await?;
    // The garbage collector removes the pods after their Deployment; wait for that too, so
    // that "uninstalled" means no manager runs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&manifests::pod_selector()))
        .await
        .map_err(|e| api_error(format!("list manager pods in {namespace}"), e))?;
    for pod in list.items {
        wait_deleted(&pods, &pod).await?;
    }

    // The cluster-wide RBAC belongs to this namespace's manager only if it binds it.
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = get(&bindings, NAME).await?;
    let binds_here = binding.as_ref().is_some_and(|b| {
        b.subjects
            .iter()
            .flatten()
            .any(|s| s.namespace.as_deref() == Some(namespace))
    });
    let bound_elsewhere = binding.is_some() && !binds_here;
    if binds_here {
        delete_ours(&bindings, NAME, &mut removed).await?;
    }
    if !bound_elsewhere {
        delete_ours(&Api::<ClusterRole>::all(client.clone()), NAME, &mut removed).await?;
    }

    let namespaces: Api<Namespace> = Api::all(client);
    if let Some(ns) = get(&namespaces, namespace).await?
        && manifests::label(&ns.metadata, LABEL_MANAGED_BY) == Some("tether")
    {
        delete_and_wait(&namespaces, &ns).await?;
        removed.objects.push(format!("namespace/{namespace}"));
    }
    Ok(removed)
}

/// Deletes `name` if it exists and carries tether's label, then waits until it is gone.
async fn delete_ours<K>(api: &Api<K>, name: &str, removed: &mut Removed) -> Result<(), InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let Some(object) = get(api, name).await? else {
        return Ok(());
    };
    if manifests::label(object.meta(), LABEL_PART_OF) != Some("tether") {
        tracing::info!(%name, "not deleting an object tether did not create");
        return Ok(());
    }
    delete_and_wait(api, &object).await?;
    removed
        .objects
        .push(match object.meta().namespace.as_deref() {
            Some(ns) => format!("{}/{ns}/{name}", kind::<K>()),
            None => format!("{}/{name}", kind::<K>()),
        });
    Ok(())
}

async fn delete_and_wait<K>(api: &Api<K>, object: &K) -> Result<(), InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(api_error(format!("delete {}/{name}", kind::<K>()), e)),
    }
    wait_deleted(api, object).await
}

async fn wait_deleted<K>(api: &Api<K>, object: &K) -> Result<(), InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let uid = object.meta().uid.clone().unwrap_or_default();
    let what = format!("{}/{name}", kind::<K>());
    match tokio::time::timeout(
        DELETE_TIMEOUT,
        await_condition(api.clone(), &name, conditions::is_deleted(&uid)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(api_error(
            format!("wait for {what} to be deleted"),
            kube::Error::Service(Box::new(e)),
        )),
        Err(_) => Err(InstallError::DeleteTimeout {
            what,
            waited: DELETE_TIMEOUT,
        }),
    }
}

/// Lower-case kind, as kubectl names objects (`deployment/tether-manager`).
fn kind<K: Resource>() -> String
where
    K::DynamicType: Default,
{
    K::kind(&Default::default()).to_lowercase()
}

fn ours<K: Resource>(object: &K, kind: &'static str) -> Result<(), InstallError> {
    match manifests::label(object.meta(), LABEL_PART_OF) {
        Some("tether") => Ok(()),
        _ => Err(InstallError::NotOurs {
            kind,
            name: object.meta().name.clone().unwrap_or_default(),
        }),
    }
}

async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    api.get_opt(name)
        .await
        .map_err(|e| api_error(format!("get {}/{name}", kind::<K>()), e))
}

async fn create<K>(
    api: &Api<K>,
    object: &K,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.create(&PostParams::default(), object)
        .await
        .map_err(|e| api_error(format!("create {}/{name}", kind::<K>()), e))?;
    progress(Progress::Created {
        kind: static_kind::<K>(),
        name,
    });
    Ok(())
}

/// Replaces the stored object with `desired`, carrying the stored resourceVersion; on a
/// conflict reads again and retries.
async fn replace<K>(
    api: &Api<K>,
    mut desired: K,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError>
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize,
    K::DynamicType: Default,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let action = || format!("replace {}/{name}", kind::<K>());
    for _ in 0..CONFLICT_RETRIES {
        let Some(current) = get(api, &name).await? else {
            return create(api, &desired, progress).await;
        };
        desired.meta_mut().resource_version = current.meta().resource_version.clone();
        match api.replace(&name, &PostParams::default(), &desired).await {
            Ok(_) => {
                progress(Progress::Updated {
                    kind: static_kind::<K>(),
                    name,
                });
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_error(action(), e)),
        }
    }
    Err(api_error(
        action(),
        kube::Error::Service("kept conflicting with other writers".into()),
    ))
}

/// The kinds tether installs, as `'static` names for [`Progress`].
fn static_kind<K: Resource>() -> &'static str
where
    K::DynamicType: Default,
{
    const KINDS: &[&str] = &[
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "secret",
        "deployment",
    ];
    let kind = kind::<K>();
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("object")
}

fn api_error(action: String, source: kube::Error) -> InstallError {
    match source {
        kube::Error::Api(status) if status.code == 403 => InstallError::Forbidden {
            action,
            message: status.message,
        },
        source => InstallError::Api {
            action,
            reason: describe(&source),
            source,
        },
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn versions_decide_between_upgrade_keep_and_error() {
        let v = semver::Version::parse(VERSION).unwrap();
        let patch = format!("{}.{}.{}", v.major, v.minor, v.patch + 7);
        let minor = format!("{}.{}.0", v.major, v.minor + 1);
        assert_eq!(decide("0.0.0-old", false, false), Decision::Replace);
        assert_eq!(decide("garbage", false, false), Decision::Replace);
        assert_eq!(decide(VERSION, false, true), Decision::Keep);
        assert_eq!(decide(VERSION, false, false), Decision::Replace);
        assert_eq!(decide(&patch, false, false), Decision::Keep);
        assert_eq!(decide(&minor, false, false), Decision::Incompatible);
        assert_eq!(decide(&minor, true, false), Decision::Replace);
    }

    #[test]
    fn tokens_are_32_random_bytes_in_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
