//! Everything tether does with a Kubernetes cluster on the laptop's side.
//!
//! The parts follow the order of a `tether connect`:
//! - [`client`] reads the user's kubeconfig (the same files and context kubectl would use),
//!   builds a kube-rs client and checks that the API server answers, with errors that name the
//!   context and the server.
//! - [`manifests`] builds the typed objects of the traffic manager (namespace, RBAC, token
//!   Secret, Deployment): the one place that knows the shared install contract.
//! - [`install`] makes the cluster hold exactly those objects (create, upgrade, or accept a
//!   compatible newer manager), waits for a Ready manager pod, and removes it all again.
//! - [`rollout`] holds the waiting: rollout completion, Ready pods, and the pod problems
//!   (image pulls, crash loops, scheduling) worth telling the user about.
//! - [`transport`] opens the byte stream to the manager's tunnel port through the API
//!   server's pod port-forward, the only way tether reaches the manager.
//! - [`progress`]: the events an install reports while it works.
//!
//! For intercepts:
//! - [`workload`] resolves what an intercept targets (Deployment, Service, port, container)
//!   as the endpoints controller would;
//! - [`agent`] injects the `tether-agent` sidecar with JSON patches that record what they
//!   change, and restores exactly that;
//! - [`access`] asks SelfSubjectAccessReview for every permission before anything changes;
//! - [`env`] computes the intercepted container's environment as the kubelet does, and
//!   writes env files.
//! - [`roles`]: the RBAC a developer needs, which `tether rbac` prints.
//! - [`exec_as`]: credential plugins run as the user who ran tether, not as root.
//!
//! No module here prints: they return values and errors, and report progress through a
//! callback, so the daemon and the commands decide what the user sees.

pub mod access;
pub mod agent;
pub mod client;
pub mod env;
pub mod exec_as;
pub mod install;
pub mod manifests;
pub mod progress;
pub mod roles;
pub mod rollout;
pub mod sidecars;
pub mod transport;
pub mod workload;

#[cfg(test)]
mod tests;

pub use client::{Cluster, ClusterError, KubeOptions, connect};
pub use install::{InstallError, InstallOptions, ensure_manager, uninstall};
pub use transport::TransportError;
