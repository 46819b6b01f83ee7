//! The expected reason of each bundle, derived from a snapshot of the cluster by the rules of
//! docs/status-reasons.md alone (written apart from the controller's gates on purpose: two
//! readings of the same document that must agree).

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt as _;
use kube::api::DynamicObject;
use secretbundle_api::{BUNDLE_LABEL, RefreshPolicy, SecretBundle, StoreKind};
use serde_json::Value;

/// What the document says a reason's conditions are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ready,
    Suspended,
    Idle,
    Progressing,
    Stalled,
}

/// The table of docs/status-reasons.md.
pub fn kind_of(reason: &str) -> Option<Kind> {
    Some(match reason {
        "Ready" => Kind::Ready,
        "Suspended" => Kind::Suspended,
        "WaitingForNamespace" | "WaitingForCRD" | "WaitingForDependency" | "WaitingForStore" => {
            Kind::Idle
        }
        "DependencyProgressing" | "StoreNotReady" | "SecretsNotReady" => Kind::Progressing,
        "SecretSyncFailed" | "ApplyFailed" | "DependencyCycle" | "StoreNotAllowed" | "Conflict"
        | "InvalidSpec" | "EsoUpgradeRequired" => Kind::Stalled,
        _ => return None,
    })
}

/// The ESO ExternalSecret CRD as the cluster has it.
#[derive(Clone, Debug)]
pub enum Crd {
    /// Usable, serving `version` with `schema` (its openAPIV3Schema, when it has one).
    Usable {
        version: secretbundle_controller::eso::EsoVersion,
        crd: Box<secretbundle_controller::eso::CrdSummary>,
    },
    /// Missing, not Established, being deleted, or serving no version the operator supports.
    Unusable(String),
}

/// Everything the derivation reads.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub bundles: Vec<SecretBundle>,
    /// Name -> (terminating, labels).
    pub namespaces: BTreeMap<String, (bool, BTreeMap<String, String>)>,
    pub crd: Crd,
    /// (kind, namespace or "", name) -> the store; a kind whose CRD is missing has none.
    pub stores: BTreeMap<(StoreKind, String, String), DynamicObject>,
    /// Every ExternalSecret, by (namespace, name).
    pub children: BTreeMap<(String, String), DynamicObject>,
}

/// The reasons a bundle's status may show, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub reasons: BTreeSet<&'static str>,
    pub why: String,
}

impl Expected {
    fn one(reason: &'static str, why: impl Into<String>) -> Self {
        Expected {
            reasons: [reason].into(),
            why: why.into(),
        }
    }

    /// The kind all the reasons share, if they share one.
    pub fn kind(&self) -> Option<Kind> {
        let mut kinds = self.reasons.iter().filter_map(|r| kind_of(r));
        let first = kinds.next()?;
        kinds.all(|k| k == first).then_some(first)
    }
}

impl Snapshot {
    pub fn bundle(&self, name: &str) -> Option<&SecretBundle> {
        self.bundles.iter().find(|b| b.name_any() == name)
    }

    /// The expected reason of every bundle, by name.
    pub fn expected(&self) -> BTreeMap<String, Expected> {
        let mut memo = BTreeMap::new();
        for b in &self.bundles {
            self.expect(&b.name_any(), &mut memo, &mut Vec::new());
        }
        memo
    }

    fn expect(
        &self,
        name: &str,
        memo: &mut BTreeMap<String, Expected>,
        path: &mut Vec<String>,
    ) -> Expected {
        if let Some(e) = memo.get(name) {
            return e.clone();
        }
        let Some(b) = self.bundle(name) else {
            return Expected::one("WaitingForDependency", "not found");
        };
        path.push(name.to_string());
        let e = self.derive(b, memo, path);
        path.pop();
        memo.insert(name.to_string(), e.clone());
        e
    }

    fn derive(
        &self,
        b: &SecretBundle,
        memo: &mut BTreeMap<String, Expected>,
        path: &mut Vec<String>,
    ) -> Expected {
        let spec = &b.spec;
        let ns = &spec.target_namespace;
        if spec.suspend {
            return Expected::one("Suspended", "spec.suspend");
        }
        match self.namespaces.get(ns) {
            None => return Expected::one("WaitingForNamespace", format!("{ns} missing")),
            Some((true, _)) => {
                return Expected::one("WaitingForNamespace", format!("{ns} terminating"));
            }
            Some(_) => {}
        }
        let (version, crd) = match &self.crd {
            Crd::Unusable(why) => return Expected::one("WaitingForCRD", why.clone()),
            Crd::Usable { version, crd } => (*version, crd),
        };
        if let Some(cycle) = self.cycle(&b.name_any()) {
            return Expected::one("DependencyCycle", cycle.join(" -> "));
        }
        let mut pending = Vec::new();
        let mut progressing = false;
        for dep in &spec.depends_on {
            let dep = dep.as_str();
            if path.iter().any(|p| p == dep) {
                continue; // a cycle through others, reported on its members
            }
            let e = self.expect(dep, memo, path);
            if e.reasons.contains("Ready") && e.reasons.len() == 1 {
                continue;
            }
            progressing |= e.kind() == Some(Kind::Progressing);
            pending.push(format!("{dep} ({:?})", e.reasons));
        }
        if !pending.is_empty() {
            let reason = if progressing {
                "DependencyProgressing"
            } else {
                "WaitingForDependency"
            };
            return Expected::one(reason, pending.join(", "));
        }
        if let Some(e) = self.stores_gate(b) {
            return e;
        }
        let children = match secretbundle_controller::reconcile::render::render(b, version) {
            Ok(c) => c,
            Err(e) => return Expected::one("InvalidSpec", e.to_string()),
        };
        if let Some(schema) = secretbundle_controller::eso::ServedSchema::of(crd, version) {
            let caps = secretbundle_controller::eso::Capabilities::Installed(&schema);
            if let Err(e) = secretbundle_controller::eso::features::check(&children, caps) {
                return Expected::one("EsoUpgradeRequired", e.to_string());
            }
        }
        self.children_gate(b, &children)
    }

    /// The bundles of a `dependsOn` cycle through `start`, if any (depth-first).
    fn cycle(&self, start: &str) -> Option<Vec<String>> {
        fn walk(
            s: &Snapshot,
            at: &str,
            start: &str,
            path: &mut Vec<String>,
            seen: &mut BTreeSet<String>,
        ) -> bool {
            let Some(b) = s.bundle(at) else { return false };
            for d in &b.spec.depends_on {
                let d = d.as_str();
                if d == start {
                    path.push(d.to_string());
                    return true;
                }
                if seen.insert(d.to_string()) {
                    path.push(d.to_string());
                    if walk(s, d, start, path, seen) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = vec![start.to_string()];
        walk(self, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
    }

    fn stores_gate(&self, b: &SecretBundle) -> Option<Expected> {
        let spec = &b.spec;
        let ns = &spec.target_namespace;
        let mut seen = BTreeSet::new();
        let mut closed = BTreeSet::new();
        let mut why = Vec::new();
        for s in spec.secrets.iter().filter(|s| s.reads_store()) {
            let r = s
                .secret_store_ref
                .as_deref()
                .unwrap_or(&spec.secret_store_ref);
            let kind = r.kind();
            let key_ns = if kind == StoreKind::SecretStore {
                ns.clone()
            } else {
                String::new()
            };
            if !seen.insert((kind, r.name.clone())) {
                continue;
            }
            let reason = match self.stores.get(&(kind, key_ns, r.name.clone())) {
                None => Some("WaitingForStore"),
                Some(store) if !condition_true(store, "Ready") => Some("StoreNotReady"),
                Some(store) if kind == StoreKind::ClusterSecretStore => {
                    let labels = self
                        .namespaces
                        .get(ns)
                        .map(|(_, l)| l.clone())
                        .unwrap_or_default();
                    match admits(&store.data["spec"]["conditions"], ns, &labels) {
                        Some(true) => None,
                        Some(false) => Some("StoreNotAllowed"),
                        // Conditions this reading cannot evaluate: either verdict.
                        None => {
                            why.push(format!("{} conditions unreadable", r.name));
                            None
                        }
                    }
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                closed.insert(reason);
                why.push(format!("{:?} {}: {reason}", kind, r.name));
            }
        }
        // Several closed stores: the document does not order them, so any of theirs.
        (!closed.is_empty()).then(|| Expected {
            reasons: closed,
            why: why.join("; "),
        })
    }

    fn children_gate(&self, b: &SecretBundle, children: &[DynamicObject]) -> Expected {
        let name = b.name_any();
        let ns = &b.spec.target_namespace;
        let mut stalled = BTreeSet::new();
        let (mut ready, mut failing, mut not_ready) = (0, Vec::new(), Vec::new());
        for (i, want) in children.iter().enumerate() {
            let child_name = want.name_any();
            let Some(child) = self.children.get(&(ns.clone(), child_name.clone())) else {
                // Only the API server's refusal, quoted in the status, can explain a missing child.
                stalled.insert("ApplyFailed");
                continue;
            };
            if child.labels().get(BUNDLE_LABEL) != Some(&name) {
                stalled.insert("Conflict");
                continue;
            }
            let spec = &b.spec.secrets[i.min(b.spec.secrets.len().saturating_sub(1))];
            let refresh_off = match spec.refresh_policy {
                Some(RefreshPolicy::CreatedOnce) => true,
                Some(RefreshPolicy::OnChange) => false,
                _ => zero_duration(
                    spec.refresh_interval
                        .as_deref()
                        .unwrap_or(&b.spec.refresh_interval),
                ),
            };
            match child_state(child, refresh_off) {
                ChildState::Ready => ready += 1,
                ChildState::InProgress(r) => not_ready.push(format!("{child_name} {r}")),
                ChildState::Failing(r) => failing.push(format!("{child_name} {r}")),
            }
        }
        let total = children.len();
        if !stalled.is_empty() {
            return Expected {
                reasons: stalled,
                why: format!("{ready}/{total} ready"),
            };
        }
        if !failing.is_empty() {
            return Expected::one("SecretSyncFailed", failing.join(", "));
        }
        if !not_ready.is_empty() {
            return Expected::one("SecretsNotReady", not_ready.join(", "));
        }
        Expected::one("Ready", format!("{ready}/{total} secrets ready"))
    }
}

enum ChildState {
    Ready,
    InProgress(String),
    Failing(String),
}

/// ESO's view of a child, as the document's SecretsNotReady and SecretSyncFailed read it.
fn child_state(child: &DynamicObject, refresh_off: bool) -> ChildState {
    let status = &child.data["status"];
    let Some(ready) = condition(&child.data, "Ready") else {
        return ChildState::InProgress("Pending".into());
    };
    let reason = ready["reason"].as_str().unwrap_or_default().to_string();
    if ready["status"] != "True" {
        return if reason == "SecretMissing" {
            ChildState::InProgress(reason)
        } else {
            ChildState::Failing(reason)
        };
    }
    if reason == "SecretMissing" {
        return ChildState::InProgress(reason);
    }
    let generation = child.metadata.generation.unwrap_or_default();
    if let Some(synced) = status["syncedResourceVersion"].as_str()
        && !refresh_off
        && !synced.starts_with(&format!("{generation}-"))
    {
        return ChildState::InProgress("Syncing".into());
    }
    ChildState::Ready
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_true(obj: &DynamicObject, type_: &str) -> bool {
    condition(&obj.data, type_).is_some_and(|c| c["status"] == "True")
}

/// A Go duration that is zero: every digit in it is 0.
fn zero_duration(d: &str) -> bool {
    d.chars().any(|c| c.is_ascii_digit())
        && d.chars().filter(char::is_ascii_digit).all(|c| c == '0')
}

/// Whether ESO's `spec.conditions` admit `ns` (any condition matching by name, regex or label
/// selector; none at all admits every namespace); `None` when they cannot be read.
pub fn admits(conditions: &Value, ns: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
    let list = match conditions {
        Value::Null => return Some(true),
        Value::Array(l) if l.is_empty() => return Some(true),
        Value::Array(l) => l,
        _ => return None,
    };
    for c in list {
        if c["namespaces"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == ns))
        {
            return Some(true);
        }
        for re in c["namespaceRegexes"].as_array().into_iter().flatten() {
            let re = regex::Regex::new(re.as_str()?).ok()?;
            if re.is_match(ns) {
                return Some(true);
            }
        }
        let sel = &c["namespaceSelector"];
        if sel.is_object() && selects(sel, labels)? {
            return Some(true);
        }
    }
    Some(false)
}

/// A LabelSelector (matchLabels and matchExpressions, ANDed).
fn selects(sel: &Value, labels: &BTreeMap<String, String>) -> Option<bool> {
    for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
        if labels.get(k).map(String::as_str) != Some(v.as_str()?) {
            return Some(false);
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str()?;
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        let ok = match e["operator"].as_str()? {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => !have.is_some_and(|h| values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => return None,
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
#[path = "derive_tests.rs"]
mod tests;
