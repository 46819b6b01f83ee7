//! Which bundle watch events make the controller look at a bundle again.
//!
//! A bundle's own status write is no reason (its dependents are woken by the cache, see
//! [`crate::cache`]); a new generation, labels (shards), annotations (refresh requests),
//! finalizers or a deletion are. After a relist (a restart, or a watch that expired while the
//! operator was cut off) every bundle is looked at once, from the cache the relist just filled:
//! the objects a relist streams in are not in the cache until it completes, and what changed
//! while the operator was blind (a new spec, a deletion, a dependency's readiness) is known only
//! then.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use secretbundle_api::SecretBundle;

#[derive(Default)]
pub struct Triggers {
    seen: HashMap<String, u64>,
}

/// What about a bundle is worth a reconcile when it changes.
fn fingerprint(b: &SecretBundle) -> u64 {
    let mut h = DefaultHasher::new();
    b.metadata.generation.hash(&mut h);
    b.labels().hash(&mut h);
    b.annotations().hash(&mut h);
    b.finalizers().hash(&mut h);
    b.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

impl Triggers {
    /// The bundles to reconcile after `event`, which `store` has already applied.
    pub fn on(
        &mut self,
        event: &watcher::Event<SecretBundle>,
        store: &Store<SecretBundle>,
    ) -> Vec<SecretBundle> {
        match event {
            watcher::Event::Apply(b) => {
                let print = fingerprint(b);
                match self.seen.insert(b.name_any(), print) {
                    Some(old) if old == print => vec![],
                    _ => vec![b.clone()],
                }
            }
            watcher::Event::Delete(b) => {
                self.seen.remove(&b.name_any());
                vec![b.clone()]
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => vec![],
            watcher::Event::InitDone => {
                let all: Vec<SecretBundle> = store.state().iter().map(|b| (**b).clone()).collect();
                self.seen = all.iter().map(|b| (b.name_any(), fingerprint(b))).collect();
                all
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use secretbundle_api::SecretBundleSpec;

    use super::*;

    fn bundle(name: &str, generation: i64) -> SecretBundle {
        let spec: SecretBundleSpec = serde_json::from_value(serde_json::json!({
            "targetNamespace": "ns",
            "secretStoreRef": {"name": "vault"},
            "secrets": []
        }))
        .expect("spec");
        let mut b = SecretBundle::new(name, spec);
        b.metadata.generation = Some(generation);
        b.metadata.resource_version = Some(format!("{generation}"));
        b
    }

    fn names(bs: &[SecretBundle]) -> Vec<String> {
        bs.iter().map(ResourceExt::name_any).collect()
    }

    #[test]
    fn status_writes_are_ignored_spec_labels_and_relists_are_not() {
        let (store, mut writer) = reflector::store();
        let mut t = Triggers::default();
        let mut feed = |t: &mut Triggers, e: watcher::Event<SecretBundle>| {
            writer.apply_watcher_event(&e);
            names(&t.on(&e, &store))
        };
        assert!(feed(&mut t, watcher::Event::Init).is_empty());
        assert!(feed(&mut t, watcher::Event::InitApply(bundle("a", 1))).is_empty());
        assert_eq!(feed(&mut t, watcher::Event::InitDone), ["a"]);

        let mut status_only = bundle("a", 1);
        status_only.metadata.resource_version = Some("7".into());
        assert!(feed(&mut t, watcher::Event::Apply(status_only)).is_empty());
        assert_eq!(feed(&mut t, watcher::Event::Apply(bundle("a", 2))), ["a"]);
        let mut relabelled = bundle("a", 2);
        relabelled.labels_mut().insert("shard".into(), "2".into());
        assert_eq!(feed(&mut t, watcher::Event::Apply(relabelled)), ["a"]);

        // A relist: nothing until it is complete, then every bundle, as the cache has it.
        assert!(feed(&mut t, watcher::Event::Init).is_empty());
        assert!(feed(&mut t, watcher::Event::InitApply(bundle("a", 3))).is_empty());
        assert!(feed(&mut t, watcher::Event::InitApply(bundle("b", 1))).is_empty());
        let relisted = {
            let e = watcher::Event::InitDone;
            writer.apply_watcher_event(&e);
            t.on(&e, &store)
        };
        let mut got: Vec<_> = relisted
            .iter()
            .map(|b| (b.name_any(), b.metadata.generation))
            .collect();
        got.sort();
        assert_eq!(got, [("a".into(), Some(3)), ("b".into(), Some(1))]);
    }
}
