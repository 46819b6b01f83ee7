//! What fault tests share: a fleet of bundles with known values in OpenBao, the check that each
//! bundle has exactly its children (none orphaned, duplicated or lost) and its Secrets the right
//! values, and bystanders (unmanaged ExternalSecrets and Secrets) that must never change.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, DeletionPolicy, SecretBundle};
use secretbundle_controller::eso::EsoVersion;
use serde_json::json;

use crate::stack::{OpenBao, VAULT_STORE, secret_data};
use crate::{Env, eso, wait};

/// Bundles named `<prefix>00`, `<prefix>01`, ... spread over namespaces, each with `per`
/// ExternalSecrets reading `fleet/<bundle>` property `s<i>`; every third one is `Orphan`.
pub struct Fleet {
    pub bundles: Vec<SecretBundle>,
}

impl Fleet {
    pub fn new(prefix: &str, count: usize, per: usize, namespaces: &[&str]) -> Self {
        let bundles = (0..count)
            .map(|i| {
                let name = format!("{prefix}{i:02}");
                let secrets: Vec<_> = (0..per)
                    .map(|j| json!({"name": format!("{name}-s{j}"), "data": [{"secretKey": "value",
                        "remoteRef": {"key": format!("fleet/{name}"), "property": format!("s{j}")}}]}))
                    .collect();
                let policy = if i % 3 == 2 { "Orphan" } else { "Delete" };
                serde_json::from_value(json!({
                    "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
                    "metadata": {"name": name},
                    "spec": {"targetNamespace": namespaces[i % namespaces.len()], "deletionPolicy": policy,
                             "secretStoreRef": {"name": VAULT_STORE}, "secrets": secrets}
                }))
                .unwrap_or_else(|e| panic!("fleet bundle: {e}"))
            })
            .collect();
        Fleet { bundles }
    }

    pub fn value(bundle: &str, secret: &str) -> String {
        format!("value-of-{secret}-in-{bundle}")
    }

    /// Writes every value the fleet reads into OpenBao.
    pub fn seed(&self, bao: &OpenBao) -> Result<()> {
        for b in &self.bundles {
            let name = b.name_any();
            let pairs: Vec<(String, String)> = b
                .spec
                .secrets
                .iter()
                .enumerate()
                .map(|(j, s)| (format!("s{j}"), Self::value(&name, &s.name)))
                .collect();
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            bao.put(&format!("fleet/{name}"), &refs)?;
        }
        Ok(())
    }

    pub async fn apply(&self, env: &Env) -> Result<()> {
        let applies = self.bundles.iter().map(|b| env.apply_bundle(b));
        futures::future::try_join_all(applies).await?;
        Ok(())
    }

    pub fn namespaces(&self) -> BTreeSet<String> {
        self.bundles
            .iter()
            .map(|b| b.spec.target_namespace.clone())
            .collect()
    }

    /// Waits until every bundle is Ready for its current generation, all within `within`
    /// (longer than [`wait::TIMEOUT`] where ESO's own recovery is part of the wait).
    pub async fn await_ready(&self, env: &Env, within: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        for b in &self.bundles {
            let name = b.name_any();
            let ready = kube::runtime::wait::await_condition(
                env.bundles(),
                &name,
                wait::ready_is("Ready", ""),
            );
            match tokio::time::timeout_at(deadline, ready).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("{name}: watch failed: {e}"),
                Err(_) => {
                    let last = env.bundles().get_opt(&name).await?;
                    bail!(
                        "{name} not Ready within {within:?}; last seen: {:#?}",
                        last.and_then(|b| b.status)
                    );
                }
            }
        }
        Ok(())
    }

    /// Every bundle has exactly its children, owned as its policy says, and each Secret holds
    /// its value; the only other ExternalSecrets in the namespaces are `allowed` ones.
    pub async fn check(&self, client: &Client, allowed: &[&str]) -> Result<()> {
        let bundles: Api<SecretBundle> = Api::all(client.clone());
        for ns in self.namespaces() {
            let es = eso::external_secrets(client, &ns, EsoVersion::V1);
            let mut by_bundle: BTreeMap<String, Vec<DynamicObject>> = BTreeMap::new();
            for o in es.list(&ListParams::default()).await?.items {
                match o.labels().get(BUNDLE_LABEL) {
                    Some(b) => by_bundle.entry(b.clone()).or_default().push(o),
                    None => ensure!(
                        allowed.contains(&o.name_any().as_str()),
                        "{ns}/{} has no bundle label: orphaned",
                        o.name_any()
                    ),
                }
            }
            for b in self
                .bundles
                .iter()
                .filter(|b| b.spec.target_namespace == ns)
            {
                let name = b.name_any();
                let uid = bundles.get(&name).await?.uid();
                let children = by_bundle.remove(&name).unwrap_or_default();
                let have: BTreeSet<String> = children.iter().map(ResourceExt::name_any).collect();
                let want: BTreeSet<String> =
                    b.spec.secrets.iter().map(|s| s.name.clone()).collect();
                ensure!(
                    have == want && children.len() == want.len(),
                    "{name}: children {have:?}, want {want:?}"
                );
                for c in &children {
                    let owners: Vec<_> = c.owner_references().iter().map(|o| &o.uid).collect();
                    let expected: Vec<_> = match b.spec.deletion_policy {
                        DeletionPolicy::Delete => uid.iter().collect(),
                        DeletionPolicy::Orphan => vec![],
                    };
                    ensure!(
                        owners == expected,
                        "{ns}/{}: owners {owners:?}, want {expected:?}",
                        c.name_any()
                    );
                }
                for s in &b.spec.secrets {
                    let data = secret_data(client, &ns, &s.name).await?;
                    let value = data.as_ref().and_then(|d| d.get("value"));
                    ensure!(
                        value == Some(&Self::value(&name, &s.name)),
                        "Secret {ns}/{}: {data:?}",
                        s.name
                    );
                }
            }
            if let Some((other, _)) = by_bundle.into_iter().next() {
                bail!("{ns}: children labelled for {other}, which is not in the fleet");
            }
        }
        Ok(())
    }
}

/// Unmanaged objects in each namespace, made before the operator meets them: an ExternalSecret
/// (synced by ESO), its Secret and a plain Secret. Their resourceVersions must never change.
pub struct Bystanders {
    seen: Vec<(&'static str, String, String, String)>,
}

pub const BYSTANDER: &str = "bystander";

impl Bystanders {
    pub async fn create(client: &Client, bao: &OpenBao, namespaces: &[&str]) -> Result<Self> {
        bao.put("bystander/app", &[("token", "not-ours")])?;
        let pp = PatchParams::apply("someone-else");
        for ns in namespaces {
            let es = json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": BYSTANDER, "namespace": ns},
                "spec": {"secretStoreRef": {"name": VAULT_STORE, "kind": "ClusterSecretStore"},
                         "refreshInterval": "1h", "target": {"name": BYSTANDER},
                         "data": [{"secretKey": "token", "remoteRef": {"key": "bystander/app", "property": "token"}}]}
            });
            eso::external_secrets(client, ns, EsoVersion::V1)
                .patch(BYSTANDER, &pp, &Patch::Apply(&es))
                .await?;
            let plain = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bystander-plain", "namespace": ns}, "stringData": {"k": "v"}});
            Api::<Secret>::namespaced(client.clone(), ns)
                .patch("bystander-plain", &pp, &Patch::Apply(&plain))
                .await?;
        }
        let mut seen = Vec::new();
        for ns in namespaces {
            let es = eso::external_secrets(client, ns, EsoVersion::V1);
            let synced = wait::until(
                &es,
                BYSTANDER,
                "synced by ESO",
                |o: Option<&DynamicObject>| {
                    o.is_some_and(|o| {
                        o.data["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                },
            )
            .await?;
            seen.push((
                "ExternalSecret",
                ns.to_string(),
                BYSTANDER.into(),
                rv(&synced)?,
            ));
            let secrets = Api::<Secret>::namespaced(client.clone(), ns);
            for name in [BYSTANDER, "bystander-plain"] {
                let s = wait::until(&secrets, name, "present", |o: Option<&Secret>| o.is_some())
                    .await?;
                seen.push(("Secret", ns.to_string(), name.into(), rv(&s)?));
            }
        }
        Ok(Bystanders { seen })
    }

    /// Every bystander still exists at the resourceVersion it had when created.
    pub async fn assert_untouched(&self, client: &Client) -> Result<()> {
        for (kind, ns, name, before) in &self.seen {
            let now = match *kind {
                "Secret" => Api::<Secret>::namespaced(client.clone(), ns)
                    .get_opt(name)
                    .await?
                    .map(|o| (rv(&o), o.managed_fields().to_vec())),
                _ => eso::external_secrets(client, ns, EsoVersion::V1)
                    .get_opt(name)
                    .await?
                    .map(|o| (rv(&o), o.managed_fields().to_vec())),
            };
            let (after, fields) = now.with_context(|| format!("{kind} {ns}/{name} was deleted"))?;
            let after = after?;
            ensure!(
                &after == before,
                "{kind} {ns}/{name} changed: resourceVersion {before} -> {after}; managers: {:?}",
                fields
                    .iter()
                    .map(|f| (&f.manager, &f.operation, &f.subresource))
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}

fn rv(o: &impl ResourceExt) -> Result<String> {
    o.resource_version().context("no resourceVersion")
}
