//! Which bundles an event concerns, found by lookup instead of a scan over every bundle and
//! its secrets. Updated from the bundle watch, after the bundle cache and before any wake-up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use kube::ResourceExt;
use secretbundle_api::{SecretBundle, StoreKind};

use crate::facts::referenced_stores;

/// An ExternalSecret by namespace and name: shared strings, since the child cache and its
/// index by bundle hold the same key, and thousands of children one namespace.
pub type ChildKey = (Arc<str>, Arc<str>);

pub fn child_key(namespace: &str, name: &str) -> ChildKey {
    (super::compact::shared(namespace), Arc::from(name))
}

/// A secret store: SecretStores live in a namespace, ClusterSecretStores in none ("").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    pub kind: StoreKind,
    pub namespace: String,
    pub name: String,
}

/// A child's name in the index: a 64-bit digest of namespace and name, not the strings, since
/// there is one per child. Only wake-ups read this index, and a collision (about one in 10^10
/// at 50,000 children) wakes a bundle that then finds nothing to do.
type ChildDigest = u64;

/// FNV-1a: stable, and enough to spread names that are never chosen against it.
fn digest(namespace: &str, name: &str) -> ChildDigest {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Everything one bundle is indexed under, to unlink it again.
#[derive(Debug, Default)]
struct Keys {
    namespace: String,
    dependencies: Vec<String>,
    stores: Vec<StoreId>,
    children: Vec<ChildDigest>,
    uid: Option<String>,
}

#[derive(Debug, Default)]
pub struct Index {
    keys: HashMap<String, Keys>,
    by_namespace: HashMap<String, Names>,
    by_dependency: HashMap<String, Names>,
    by_store: HashMap<StoreId, Names>,
    by_child: HashMap<ChildDigest, Names>,
    by_uid: HashMap<String, String>,
}

/// Bundle names under one key: usually one, sized exactly and sharing the bundle's name (a
/// set's node, or a vector's spare room, would cost more than the key; there is one per child).
type Names = Box<[Arc<str>]>;

fn link<K: Hash + Eq>(map: &mut HashMap<K, Names>, key: K, name: &Arc<str>) {
    let names = map.entry(key).or_default();
    if !names.iter().any(|n| n == name) {
        let mut v = names.to_vec();
        v.push(name.clone());
        v.sort_unstable();
        *names = v.into_boxed_slice();
    }
}

fn unlink<K: Hash + Eq>(map: &mut HashMap<K, Names>, key: &K, name: &str) {
    if let Some(names) = map.get_mut(key) {
        if names.iter().any(|n| &**n == name) {
            *names = names.iter().filter(|n| &***n != name).cloned().collect();
        }
        if names.is_empty() {
            map.remove(key);
        }
    }
}

fn get<K: Hash + Eq>(map: &HashMap<K, Names>, key: &K) -> Vec<String> {
    map.get(key)
        .into_iter()
        .flatten()
        .map(|n| n.to_string())
        .collect()
}

/// The stores a bundle reads, as the store watches name them.
pub fn store_ids(bundle: &SecretBundle) -> Vec<StoreId> {
    referenced_stores(bundle)
        .into_iter()
        .map(|k| StoreId {
            namespace: match k.kind {
                StoreKind::ClusterSecretStore => String::new(),
                StoreKind::SecretStore => bundle.spec.target_namespace.clone(),
            },
            kind: k.kind,
            name: k.name,
        })
        .collect()
}

impl Index {
    /// Indexes `bundle` as it is now (replacing what it was indexed under before).
    pub fn upsert(&mut self, bundle: &SecretBundle) {
        let name = bundle.name_any();
        self.remove(&name);
        let shared: Arc<str> = Arc::from(name.as_str());
        let ns = bundle.spec.target_namespace.clone();
        let keys = Keys {
            namespace: ns.clone(),
            dependencies: bundle.spec.depends_on.clone(),
            stores: store_ids(bundle),
            children: bundle
                .spec
                .secrets
                .iter()
                .map(|s| digest(&ns, &s.name))
                .collect(),
            uid: bundle.metadata.uid.clone(),
        };
        link(&mut self.by_namespace, keys.namespace.clone(), &shared);
        for d in &keys.dependencies {
            link(&mut self.by_dependency, d.clone(), &shared);
        }
        for s in &keys.stores {
            link(&mut self.by_store, s.clone(), &shared);
        }
        for c in &keys.children {
            link(&mut self.by_child, *c, &shared);
        }
        if let Some(uid) = &keys.uid {
            self.by_uid.insert(uid.clone(), name.clone());
        }
        self.keys.insert(name, keys);
    }

    pub fn remove(&mut self, name: &str) {
        let Some(keys) = self.keys.remove(name) else {
            return;
        };
        unlink(&mut self.by_namespace, &keys.namespace, name);
        for d in &keys.dependencies {
            unlink(&mut self.by_dependency, d, name);
        }
        for s in &keys.stores {
            unlink(&mut self.by_store, s, name);
        }
        for c in &keys.children {
            unlink(&mut self.by_child, c, name);
        }
        if let Some(uid) = &keys.uid {
            self.by_uid.remove(uid);
        }
    }

    /// Replaces the whole index (after the bundle watch relisted).
    pub fn rebuild<'a>(&mut self, bundles: impl IntoIterator<Item = &'a SecretBundle>) {
        *self = Index::default();
        for b in bundles {
            self.upsert(b);
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Bundles whose target namespace is `ns`.
    pub fn targeting(&self, ns: &str) -> Vec<String> {
        get(&self.by_namespace, &ns.to_string())
    }

    /// Bundles that list `name` in `dependsOn`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        get(&self.by_dependency, &name.to_string())
    }

    pub fn using_store(&self, id: &StoreId) -> Vec<String> {
        get(&self.by_store, id)
    }

    /// Bundles reading any store of `kind` (one entry per distinct store, not per bundle).
    pub fn using_store_kind(&self, kind: StoreKind) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_store
            .iter()
            .filter(|(id, _)| id.kind == kind)
            .flat_map(|(_, n)| n.iter().map(|n| n.to_string()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Bundles with a secret of this name in this namespace: owner and any contender (and, on
    /// a digest collision, a bundle that only has to look).
    pub fn wanting(&self, key: &ChildKey) -> Vec<String> {
        get(&self.by_child, &digest(&key.0, &key.1))
    }

    /// The bundle with this UID (an ownerReference names it so).
    pub fn with_uid(&self, uid: &str) -> Option<String> {
        self.by_uid.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, ns: &str, deps: &[&str], secrets: &[&str]) -> SecretBundle {
        let secrets: Vec<_> = secrets
            .iter()
            .map(|s| serde_json::json!({"name": s, "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {"targetNamespace": ns, "secretStoreRef": {"name": "vault"}, "dependsOn": deps, "secrets": secrets}
        }))
        .expect("bundle")
    }

    #[test]
    fn finds_bundles_by_what_they_use_and_forgets_what_they_dropped() {
        let mut ix = Index::default();
        ix.upsert(&bundle("a", "apps", &[], &["db"]));
        ix.upsert(&bundle("b", "apps", &["a"], &["db", "cache"]));
        assert_eq!(ix.targeting("apps"), ["a", "b"]);
        assert_eq!(ix.dependents("a"), ["b"]);
        assert_eq!(ix.wanting(&child_key("apps", "db")), ["a", "b"]);
        let vault = StoreId {
            kind: StoreKind::ClusterSecretStore,
            namespace: String::new(),
            name: "vault".into(),
        };
        assert_eq!(ix.using_store(&vault), ["a", "b"]);
        assert_eq!(
            ix.using_store_kind(StoreKind::ClusterSecretStore),
            ["a", "b"]
        );
        assert!(ix.using_store_kind(StoreKind::SecretStore).is_empty());
        assert_eq!(ix.with_uid("uid-b").as_deref(), Some("b"));

        ix.upsert(&bundle("b", "other", &[], &["cache"]));
        assert_eq!(ix.targeting("apps"), ["a"]);
        assert!(ix.dependents("a").is_empty());
        assert_eq!(ix.wanting(&child_key("apps", "db")), ["a"]);
        ix.remove("a");
        assert!(ix.targeting("apps").is_empty());
        assert!(ix.wanting(&child_key("apps", "db")).is_empty());
        assert_eq!(ix.all(), ["b"]);
    }

    /// The digest is part of no stored state, but it must not collide on names that differ
    /// only in where namespace ends and name begins.
    #[test]
    fn a_child_digest_separates_namespace_from_name() {
        assert_ne!(digest("ab", "c"), digest("a", "bc"));
        assert_eq!(digest("apps", "db"), digest("apps", "db"));
    }
}
