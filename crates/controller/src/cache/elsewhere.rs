//! Another shard's children, by their metadata: enough to know a name is taken, by which
//! bundle, and to take over the children of a bundle that moved to this shard.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use secretbundle_api::BUNDLE_LABEL;

use super::compact::{Token, shared};
use super::mirror::Cached;

#[derive(Clone, Debug, PartialEq)]
pub struct Elsewhere {
    uid: Option<Token>,
    resource_version: Option<Token>,
    /// The bundle its label names.
    bundle: Arc<str>,
}

impl Elsewhere {
    pub fn from_meta(obj: &PartialObjectMeta<DynamicObject>) -> Self {
        Elsewhere {
            uid: obj.metadata.uid.as_deref().map(Token::new),
            resource_version: obj.metadata.resource_version.as_deref().map(Token::new),
            bundle: shared(obj.labels().get(BUNDLE_LABEL).map_or("", String::as_str)),
        }
    }

    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    pub fn resource_version(&self) -> Option<String> {
        self.resource_version.as_ref().map(Token::to_string)
    }

    pub fn uid(&self) -> Option<String> {
        self.uid.as_ref().map(Token::to_string)
    }
}

impl Cached for Elsewhere {
    fn version(&self) -> Option<u64> {
        self.resource_version.as_ref()?.decimal()
    }
    /// Only who it is and whose it is matter to a bundle.
    fn same(&self, other: &Self) -> bool {
        self.uid == other.uid && self.bundle == other.bundle
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::cache::{Caches, Current, child_key};

    fn meta(name: &str, bundle: &str, rv: &str) -> PartialObjectMeta<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
                         "resourceVersion": rv, "labels": {BUNDLE_LABEL: bundle}},
        }))
        .expect("meta")
    }

    fn entry(name: &str, bundle: &str, rv: &str) -> (crate::cache::ChildKey, Elsewhere) {
        (
            child_key("apps", name),
            Elsewhere::from_meta(&meta(name, bundle, rv)),
        )
    }

    /// Another shard's child is a name taken (by its bundle), and a child of a bundle that
    /// moved here is found by that bundle, to be relabelled or pruned.
    #[test]
    fn another_shards_child_is_taken_and_a_moved_bundles_child_is_found() {
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let caches = Caches::with_shards(wake, true);
        for event in [
            Event::Init,
            Event::InitApply(entry("beta-db", "beta", "7")),
            Event::InitApply(entry("alpha-db", "alpha", "8")),
            Event::InitDone,
        ] {
            caches.elsewhere_event(event);
        }
        let Current::Elsewhere(e) = caches.current(&child_key("apps", "beta-db")) else {
            panic!("not known as another shard's");
        };
        assert_eq!(
            (e.bundle(), e.uid().as_deref()),
            ("beta", Some("uid-beta-db"))
        );
        let found = caches.children_of("alpha", None);
        assert_eq!(found.len(), 1);
        assert_eq!(&*found[0].0.1, "alpha-db");
        assert!(matches!(found[0].1, Current::Elsewhere(_)));

        // Relabelled for this shard's bundle: it leaves the watch of the others'.
        while woken.try_recv().is_ok() {}
        caches.elsewhere_event(Event::Delete(entry("alpha-db", "alpha", "9")));
        assert!(matches!(
            caches.current(&child_key("apps", "alpha-db")),
            Current::Absent
        ));
        let names: Vec<String> = std::iter::from_fn(|| woken.try_recv().ok())
            .map(|r| r.name)
            .collect();
        assert!(names.contains(&"alpha".to_string()), "{names:?}");
    }
}
