//! Status truth: every bundle's status compared with the one recomputed from the cluster (see
//! [`derive`]), so a status that stuck on an old reason fails whatever test it happens in.
//! Also checked: the conditions match the reason's kind, the status is for the current
//! generation, and no ExternalSecret is labelled for a bundle that does not list it (a
//! duplicate, or one cleanup lost).

pub mod derive;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle, StoreKind};
use secretbundle_controller::eso::{CrdSummary, EsoKind, EsoVersion, preferred_served};
use tokio::time::Instant;

use derive::{Crd, Kind, Snapshot};

/// How long statuses may take to catch up with the cluster once a test is done: generous, it
/// only catches a status that never would.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(60);

const EXTERNAL_SECRETS_CRD: &str = "externalsecrets.external-secrets.io";

/// Reads what the derivation needs.
pub async fn snapshot(client: &Client) -> Result<Snapshot> {
    let bundles = Api::<SecretBundle>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| {
            let terminating = n.metadata.deletion_timestamp.is_some()
                || n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
            (n.name_any(), (terminating, n.labels().clone()))
        })
        .collect();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = match crds.get_opt(EXTERNAL_SECRETS_CRD).await? {
        None => Crd::Unusable("not installed".into()),
        Some(c) if c.metadata.deletion_timestamp.is_some() => Crd::Unusable("being deleted".into()),
        Some(c) if !established(&c) => Crd::Unusable("not Established".into()),
        Some(c) => match preferred_served(&summary(&c)?) {
            Ok(version) => Crd::Usable {
                version,
                crd: Box::new(summary(&c)?),
            },
            Err(p) => Crd::Unusable(format!("{p:?}")),
        },
    };
    let mut stores = BTreeMap::new();
    for (kind, plural) in [
        (StoreKind::ClusterSecretStore, "clustersecretstores"),
        (StoreKind::SecretStore, "secretstores"),
    ] {
        let Some(c) = crds
            .get_opt(&format!("{plural}.external-secrets.io"))
            .await?
        else {
            continue;
        };
        let Ok(version) = preferred_served(&summary(&c)?) else {
            continue;
        };
        for s in list(client, EsoKind::of_store(kind), version).await? {
            let ns = s.namespace().unwrap_or_default();
            stores.insert((kind, ns, s.name_any()), s);
        }
    }
    let mut children = BTreeMap::new();
    if let Crd::Usable { version, .. } = &crd {
        for c in list(client, EsoKind::ExternalSecret, *version).await? {
            children.insert((c.namespace().unwrap_or_default(), c.name_any()), c);
        }
    }
    Ok(Snapshot {
        bundles,
        namespaces,
        crd,
        stores,
        children,
    })
}

async fn list(client: &Client, kind: EsoKind, version: EsoVersion) -> Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource(version));
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The CRD as the operator's own code reads it, for the version and schema it would pick.
fn summary(crd: &CustomResourceDefinition) -> Result<CrdSummary> {
    Ok(serde_json::from_value(serde_json::to_value(crd)?)?)
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Every way the statuses in `s` differ from what `s` implies; empty when they all agree.
pub fn differences(s: &Snapshot) -> Vec<String> {
    let expected = s.expected();
    let mut out = Vec::new();
    for b in &s.bundles {
        let name = b.name_any();
        // Being deleted: the finalizer's cleanup, not a verdict.
        if b.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(want) = expected.get(&name) else {
            continue;
        };
        let cond = |t: &str| {
            b.status
                .as_ref()
                .and_then(|st| st.conditions.iter().find(|c| c.type_ == t))
        };
        let Some(ready) = cond("Ready") else {
            out.push(format!(
                "{name}: no Ready condition; expected {:?} ({})",
                want.reasons, want.why
            ));
            continue;
        };
        if ready.observed_generation != b.metadata.generation {
            out.push(format!(
                "{name}: status for generation {:?}, the bundle is at {:?}",
                ready.observed_generation, b.metadata.generation
            ));
        }
        if !want.reasons.contains(ready.reason.as_str()) {
            out.push(format!(
                "{name}: says {} ({}); the cluster implies {:?} ({})",
                ready.reason, ready.message, want.reasons, want.why
            ));
            continue;
        }
        let kind = derive::kind_of(&ready.reason);
        let is_true = |t: &str| cond(t).is_some_and(|c| c.status == "True");
        for (t, want_true) in [
            ("Ready", kind == Some(Kind::Ready)),
            ("Reconciling", kind == Some(Kind::Progressing)),
            ("Stalled", kind == Some(Kind::Stalled)),
        ] {
            if is_true(t) != want_true {
                out.push(format!(
                    "{name}: {t}={} with reason {}",
                    is_true(t),
                    ready.reason
                ));
            }
        }
    }
    out.extend(strays(s, &expected));
    out
}

/// ExternalSecrets labelled for a bundle that is gone, or Ready without listing them.
fn strays(s: &Snapshot, expected: &BTreeMap<String, derive::Expected>) -> Vec<String> {
    let mut out = Vec::new();
    for ((ns, name), child) in &s.children {
        let Some(owner) = child.labels().get(BUNDLE_LABEL) else {
            continue;
        };
        match s.bundle(owner) {
            None => out.push(format!(
                "ExternalSecret {ns}/{name} labelled for {owner}, which is gone"
            )),
            Some(b)
                if b.metadata.deletion_timestamp.is_none()
                    && expected
                        .get(owner)
                        .is_some_and(|e| e.reasons.contains("Ready")) =>
            {
                let listed = b.spec.target_namespace == *ns
                    && b.spec.secrets.iter().any(|sec| sec.name == *name);
                if !listed {
                    out.push(format!(
                        "ExternalSecret {ns}/{name} labelled for {owner}, which does not list it"
                    ));
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// Waits until every status equals the recomputed one (statuses lag the cluster by a round
/// trip or two), and fails with every difference still there after [`SETTLE_WITHIN`].
/// Returns how many bundles were checked.
pub async fn assert_statuses_true(client: &Client) -> Result<usize> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let started = Instant::now();
    loop {
        let s = snapshot(client).await?;
        let diffs = differences(&s);
        if diffs.is_empty() {
            eprintln!(
                "status truth: {} bundle(s) agree with the cluster ({:?} to settle)",
                s.bundles.len(),
                started.elapsed()
            );
            return Ok(s.bundles.len());
        }
        if Instant::now() > deadline {
            bail!(
                "statuses still disagree with the cluster {SETTLE_WITHIN:?} after the test:\n  {}",
                diffs.join("\n  ")
            );
        }
        // A snapshot of several kinds has no single watch to await; re-read shortly.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
