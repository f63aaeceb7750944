//! Lists the cluster's Services with kube-rs's in-cluster configuration, unmodified: the
//! service-account token and CA under /var/run/secrets/kubernetes.io/serviceaccount and
//! KUBERNETES_SERVICE_HOST/PORT. The sandbox's tests run it inside a pod (image
//! `tether-sandbox/host`) to prove pods reach the API server as a real cluster's do.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = kube::Config::incluster()?;
    println!("cluster url: {}", config.cluster_url);
    let client = kube::Client::try_from(config)?;
    let services: Api<Service> = Api::all(client);
    for svc in services.list(&ListParams::default()).await? {
        let meta = svc.metadata;
        println!(
            "service {}/{}",
            meta.namespace.unwrap_or_default(),
            meta.name.unwrap_or_default()
        );
    }
    Ok(())
}
