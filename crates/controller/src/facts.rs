//! What the operator knows about a bundle's world, as plain values: the target namespace, its
//! dependencies and its stores. The watches keep these facts in the caches, `observe` gathers
//! them for one bundle, and the gates decide on them; so they live here, below all three.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use secretbundle_api::{SecretBundle, StoreKind, condition};
use serde::Deserialize;
use serde_json::Value;

use crate::eso::{CrdProblem, EsoVersion, ServedSchema};

/// The target namespace as the gate sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum NamespaceFact {
    Absent,
    Terminating,
    Active { labels: BTreeMap<String, String> },
}

/// A bundle named in `dependsOn`.
#[derive(Clone, Debug, PartialEq)]
pub enum DependencyFact {
    Missing,
    /// `progressing`: the dependency is being worked on and will move by itself (no status for
    /// its generation yet, or `Reconciling=True`), as opposed to waiting or failing.
    NotReady {
        reason: String,
        progressing: bool,
    },
    Ready,
}

/// A dependency is Ready when its Ready condition is True for its current generation.
pub fn dependency_fact(dep: Option<&SecretBundle>) -> DependencyFact {
    let Some(dep) = dep else {
        return DependencyFact::Missing;
    };
    let conditions = dep.status.as_ref().map(|s| s.conditions.as_slice());
    let find = |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t));
    let reconciling = find(condition::RECONCILING).is_some_and(|c| c.status == "True");
    match find(condition::READY) {
        Some(c) if c.observed_generation != dep.metadata.generation => DependencyFact::NotReady {
            reason: "status is for an older generation".into(),
            progressing: true,
        },
        Some(c) if c.status == "True" => DependencyFact::Ready,
        Some(c) => DependencyFact::NotReady {
            reason: c.reason.clone(),
            progressing: reconciling,
        },
        None => DependencyFact::NotReady {
            reason: "no status yet".into(),
            progressing: true,
        },
    }
}

/// What a bundle's dependents need to know of it: whether it is Ready, and what it depends on
/// (to find cycles). A shard keeps only this of the other shards' bundles.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub resource_version: Option<u64>,
    pub depends_on: Vec<String>,
    pub fact: DependencyFact,
}

impl Peer {
    pub fn of(bundle: &SecretBundle) -> Self {
        Peer {
            resource_version: bundle.resource_version().and_then(|v| v.parse().ok()),
            depends_on: bundle.spec.depends_on.clone(),
            fact: dependency_fact(Some(bundle)),
        }
    }
}

/// A referenced secret store.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreFact {
    Absent,
    NotReady { message: String },
    Ready { conditions: Vec<StoreCondition> },
}

/// One of a ClusterSecretStore's `spec.conditions`: which namespaces may use it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreCondition {
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub namespace_regexes: Vec<String>,
}

/// Everything the gates need, gathered by `observe`.
#[derive(Clone, Debug)]
pub struct Facts {
    pub namespace: NamespaceFact,
    pub crd: Result<EsoVersion, CrdProblem>,
    /// The schema the ExternalSecret CRD serves for that version, when it has one.
    pub eso_schema: Option<std::sync::Arc<ServedSchema>>,
    /// In `dependsOn` order.
    pub dependencies: Vec<(String, DependencyFact)>,
    /// A dependency path that leads back to this bundle, if any.
    pub cycle: Option<Vec<String>>,
    /// Every distinct store the bundle's secrets read from.
    pub stores: Vec<(StoreKey, StoreFact)>,
}

/// A store as the bundle refers to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreKey {
    pub kind: StoreKind,
    pub name: String,
}

impl std::fmt::Display for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
            StoreKind::SecretStore => "SecretStore",
        };
        write!(f, "{kind} {:?}", self.name)
    }
}

/// Every store the bundle reads from, deduplicated, in first-use order. A secret fed only by
/// generators reads none.
pub fn referenced_stores(bundle: &SecretBundle) -> Vec<StoreKey> {
    let mut seen = BTreeSet::new();
    let spec = &bundle.spec;
    spec.secrets
        .iter()
        .filter(|s| s.reads_store())
        .map(|s| {
            s.secret_store_ref
                .as_deref()
                .unwrap_or(&spec.secret_store_ref)
        })
        .map(|r| StoreKey {
            kind: r.kind(),
            name: r.name.clone(),
        })
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

/// A store is usable when ESO reports `Ready=True`; its `spec.conditions` restrict namespaces.
pub fn read_store(data: &Value) -> StoreFact {
    let ready = data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    match ready {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            let conditions = match data.pointer("/spec/conditions") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => match serde_json::from_value::<Vec<StoreCondition>>(v.clone()) {
                    Ok(c) => c,
                    // Unreadable restrictions admit no namespace (fail closed), and say why.
                    Err(e) => {
                        return StoreFact::NotReady {
                            message: format!(
                                "its spec.conditions cannot be read ({e}), so no namespace is admitted"
                            ),
                        };
                    }
                },
            };
            StoreFact::Ready { conditions }
        }
        Some(c) => {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
            StoreFact::NotReady {
                message: format!("{}: {}", field("reason"), field("message")),
            }
        }
        None => StoreFact::NotReady {
            message: "ESO has not reported on it yet".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_store_whose_conditions_cannot_be_read_admits_no_namespace() {
        let ready = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let store =
            |conditions: Value| json!({"spec": {"conditions": conditions}, "status": ready});
        assert_eq!(
            read_store(&json!({"status": ready})),
            StoreFact::Ready { conditions: vec![] }
        );
        assert!(
            matches!(read_store(&store(json!([{"namespaces": ["a"]}]))), StoreFact::Ready { conditions } if conditions.len() == 1)
        );
        match read_store(&store(json!({"namespaces": "a"}))) {
            StoreFact::NotReady { message } => {
                assert!(message.contains("spec.conditions"), "{message}")
            }
            other => panic!("an unreadable spec.conditions admitted namespaces: {other:?}"),
        }
    }
}
