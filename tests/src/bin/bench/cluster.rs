//! One fresh control plane per measurement, with an audit log, so every run starts from the
//! same empty etcd and requests can be counted per client from the apiserver's side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr as _;

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DynamicObject, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::controlplane::{ControlPlane, Options};
use secretbundle_tests::{apply_crds, eso, simple_bundle};
use serde_json::{Value, json};

/// The ESO release whose CRDs the benchmark installs (serves v1).
pub const ESO: &str = "v2.9.0";

pub struct Cluster {
    pub client: Client,
    pub cp: ControlPlane,
}

/// The identities the measured processes run as; the audit log tells them apart.
pub const OPERATOR: &str = "operator";
pub const FLOOR: &str = "floor";

impl Cluster {
    /// A control plane with the SecretBundle CRD and, with `eso`, ESO's CRDs and a Ready store.
    pub async fn start(eso: bool) -> Result<Self> {
        let cp = ControlPlane::start_with(Options::audited()).await?;
        let client = cp.client().await?;
        apply_crds(&client, vec![SecretBundle::crd()]).await?;
        let cluster = Cluster { client, cp };
        if eso {
            cluster.install_eso().await?;
        }
        Ok(cluster)
    }

    /// [`Cluster::start`] with ESO, then `namespaces` and `bundles` created: how every cold
    /// start and every scenario on a populated cluster begins.
    pub async fn seeded(namespaces: &[String], bundles: Vec<SecretBundle>) -> Result<Self> {
        let cluster = Self::start(true).await?;
        cluster.namespaces(namespaces).await?;
        cluster.create_bundles(bundles).await?;
        Ok(cluster)
    }

    pub async fn install_eso(&self) -> Result<()> {
        apply_crds(&self.client, eso::crds(ESO)?).await?;
        eso::ready_cluster_store(&self.client, EsoVersion::V1, eso::TEST_STORE).await?;
        self.warm_watch_caches().await
    }

    /// Waits until the apiserver serves streaming watches of the ESO kinds. Right after a CRD is
    /// created its watch cache is still initialising (`429 storage is (re)initializing`, retry
    /// after 1 s): a wait that belongs to the fresh control plane, not to the client started
    /// next, and one a floor client that never watches would not pay.
    async fn warm_watch_caches(&self) -> Result<()> {
        use kube::runtime::watcher;
        for kind in EsoKind::ALL {
            let api: Api<DynamicObject> =
                Api::all_with(self.client.clone(), &kind.api_resource(EsoVersion::V1));
            let mut events = watcher(api, watcher::Config::default().streaming_lists()).boxed();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let next = tokio::time::timeout_at(deadline, events.next()).await;
                match next.context("ESO watch caches not ready after 60 s")? {
                    Some(Ok(watcher::Event::InitDone)) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    /// A kubeconfig for a cluster-admin ServiceAccount named `who`.
    pub async fn kubeconfig_for(&self, who: &str) -> Result<PathBuf> {
        let pp = PostParams::default();
        let sas = Api::<ServiceAccount>::namespaced(self.client.clone(), "default");
        if sas.get_opt(who).await?.is_none() {
            sas.create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": who}}))?,
            )
            .await?;
            let crb = json!({"metadata": {"name": format!("bench-{who}")},
                "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": "default"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}});
            Api::<ClusterRoleBinding>::all(self.client.clone())
                .create(&pp, &serde_json::from_value(crb)?)
                .await?;
        }
        let token = sas
            .create_token_request(who, &pp, &TokenRequest::default())
            .await?
            .status
            .and_then(|s| s.token)
            .context("no token")?;
        self.cp.token_kubeconfig_path(who, &token)
    }

    pub async fn namespaces(&self, names: &[String]) -> Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        for n in names {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": n}}))?,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates bundles, a few at a time.
    pub async fn create_bundles(&self, bundles: Vec<SecretBundle>) -> Result<()> {
        let api = Api::<SecretBundle>::all(self.client.clone());
        stream::iter(bundles)
            .map(|b| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &b).await }
            })
            .buffer_unordered(8)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok(())
    }

    /// Current length of the audit log: count requests from here with [`Cluster::requests`].
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.cp.audit_log()).map_or(0, |m| m.len())
    }

    /// Requests `who` sent since `mark`, by verb (a watch counts once, when it starts), and by
    /// kind (verb, resource, subresource) with the apiserver's time to answer each.
    pub fn requests(&self, who: &str, mark: u64) -> Result<Requests> {
        let bytes = std::fs::read(self.cp.audit_log())?;
        anyhow::ensure!(
            bytes.len() as u64 >= mark,
            "the audit log shrank below its mark: rotated, so requests would go uncounted"
        );
        let start = usize::try_from(mark).unwrap_or(usize::MAX).min(bytes.len());
        let user = format!("system:serviceaccount:default:{who}");
        let mut seen = BTreeSet::new();
        let mut out = Requests::default();
        for line in String::from_utf8_lossy(&bytes[start..]).lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let s = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or_default();
            if s("/user/username") != user {
                continue;
            }
            let verb = s("/verb");
            let kind = match s("/objectRef/subresource") {
                "" => format!("{verb} {}", s("/objectRef/resource")),
                sub => format!("{verb} {}/{sub}", s("/objectRef/resource")),
            };
            if seen.insert(s("/auditID").to_string()) {
                *out.by_verb.entry(verb.to_string()).or_default() += 1;
                out.by_kind.entry(kind.clone()).or_default().0 += 1;
            }
            if s("/stage") == "ResponseComplete" && verb != "watch" {
                let ms = millis_between(s("/requestReceivedTimestamp"), s("/stageTimestamp"));
                out.by_kind.entry(kind).or_default().1 += ms;
            }
        }
        Ok(out)
    }

    /// CPU seconds kube-apiserver and etcd have used so far.
    pub fn server_cpu(&self) -> Result<(f64, f64)> {
        let (apiserver, etcd) = self.cp.server_pids();
        let cpu = |pid: Option<u32>| -> Result<f64> {
            let pid = pid.context("server not running")?;
            crate::runner::cpu_seconds(&format!("/proc/{pid}/stat"))
        };
        Ok((cpu(apiserver)?, cpu(etcd)?))
    }
}

/// Milliseconds between two audit timestamps (RFC 3339, microseconds).
fn millis_between(from: &str, to: &str) -> f64 {
    let parse = |t: &str| {
        k8s_openapi::jiff::Timestamp::from_str(t)
            .map(|t| t.as_microsecond() as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    parse(to) - parse(from)
}

#[derive(Debug, Default)]
pub struct Requests {
    pub by_verb: BTreeMap<String, u64>,
    /// "verb resource[/subresource]" -> (requests, sum of the apiserver's milliseconds).
    pub by_kind: BTreeMap<String, (u64, f64)>,
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }

    pub fn writes(&self) -> u64 {
        self.by_verb
            .iter()
            .filter(|(v, _)| matches!(v.as_str(), "create" | "update" | "patch" | "delete"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Into `m`: `{key}.requests.<kind>` and `{key}.request_ms.<kind>` (mean).
    pub fn record(&self, m: &mut crate::scenarios::Metrics, key: &str) {
        for (kind, (n, ms)) in &self.by_kind {
            let kind = kind.replace(' ', "_");
            m.insert(format!("{key}.requests.{kind}"), *n as f64);
            if !kind.starts_with("watch") {
                m.insert(format!("{key}.request_ms.{kind}"), ms / *n as f64);
            }
        }
    }
}

/// `count` bundles of `secrets` secrets each, spread over `namespaces` round-robin.
pub fn bundles(
    prefix: &str,
    count: usize,
    secrets: usize,
    namespaces: &[String],
) -> Vec<SecretBundle> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let ns = &namespaces[i % namespaces.len()];
            let names: Vec<String> = (0..secrets).map(|j| format!("{name}-s{j}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            simple_bundle(&name, ns, &refs)
        })
        .collect()
}

/// "ns/name" of every child of `bundles`.
pub fn child_keys(bundles: &[SecretBundle]) -> Vec<String> {
    bundles
        .iter()
        .flat_map(|b| {
            b.spec
                .secrets
                .iter()
                .map(move |s| format!("{}/{}", b.spec.target_namespace, s.name))
        })
        .collect()
}

pub fn names(bundles: &[SecretBundle]) -> Vec<String> {
    bundles.iter().map(ResourceExt::name_any).collect()
}

/// The objects the operator applies for every bundle in the cluster (read back for their UIDs).
pub async fn desired(client: &Client) -> Result<Vec<DynamicObject>> {
    let bundles = Api::<SecretBundle>::all(client.clone())
        .list(&Default::default())
        .await?;
    let mut out = Vec::new();
    for b in &bundles.items {
        out.extend(rendered(b)?);
    }
    Ok(out)
}

/// Exactly what the operator applies for one bundle.
pub fn rendered(b: &SecretBundle) -> Result<Vec<DynamicObject>> {
    secretbundle_controller::reconcile::apply::desired(b, EsoVersion::V1)
        .map_err(|e| anyhow::anyhow!("rendering {}: {e}", b.name_any()))
}
