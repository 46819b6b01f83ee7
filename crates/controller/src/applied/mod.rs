//! What was applied, as each child records it: the applied-hash annotation ([`hash`]), how it
//! is stamped, and how a child is recognised as already being what a bundle wants. Shared by
//! the cache (which judges what it holds) and apply (which stamps what it writes), below both.

pub mod hash;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::error::Error;

/// Annotation on each child: a hash of what was applied, so an unchanged child is not rewritten.
pub const APPLIED_HASH_ANNOTATION: &str = "secrets.ameide.io/applied-hash";

/// Every field of `want` is in `have` with the same value (server defaults in `have` are fine).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        _ => want == have,
    }
}

/// Stamps the applied-hash annotation ([`hash::current`]); hashing excludes the annotation.
pub(crate) fn with_hash(mut obj: DynamicObject) -> Result<DynamicObject, Error> {
    let value = hash::current(&obj)?;
    obj.annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), value);
    Ok(obj)
}

/// `want` as it was before [`with_hash`] stamped it: what either hash is computed over.
fn unstamped(want: &DynamicObject) -> DynamicObject {
    let mut o = want.clone();
    if let Some(a) = o.metadata.annotations.as_mut() {
        a.remove(APPLIED_HASH_ANNOTATION);
        // Render leaves annotations out rather than empty: restore exactly what was hashed.
        if a.is_empty() {
            o.metadata.annotations = None;
        }
    }
    o
}

/// `want` as v0.1.0 stamped it, for tests of what an upgrade finds.
#[cfg(test)]
pub(crate) fn as_v0_1_0(want: &DynamicObject) -> DynamicObject {
    let mut o = unstamped(want);
    let old = hash::legacy(&o).expect("legacy hash");
    o.annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), old);
    o
}

/// Whether `have`, a child's applied-hash annotation, is what an older release (v0.1.0's
/// `DefaultHasher` format) wrote for exactly `want`: the same child, stamped differently.
pub(crate) fn is_legacy_hash_of(have: &str, want: &DynamicObject) -> Result<bool, Error> {
    Ok(hash::is_legacy(have) && hash::legacy(&unstamped(want))? == have)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eso::{EsoKind, EsoVersion};
    use secretbundle_api::BUNDLE_LABEL;
    use serde_json::json;

    #[test]
    fn subset_tolerates_server_defaults_but_not_drift() {
        let want = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]}});
        let defaulted = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k", "conversionStrategy": "Default"}}], "target": {"creationPolicy": "Owner"}}});
        assert!(is_subset(&want, &defaulted));
        let edited = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "other"}}]}});
        assert!(!is_subset(&want, &edited));
        let extra_item = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k"}}, {"secretKey": "b"}]}});
        assert!(!is_subset(&want, &extra_item));
    }

    #[test]
    fn an_unlabelled_child_is_ours_only_while_it_carries_our_exact_hash() {
        let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
        let labelled = |bundle: &str| {
            let mut o =
                DynamicObject::new("x", &ar).data(json!({"spec": {"refreshInterval": "1h"}}));
            o.labels_mut().insert(BUNDLE_LABEL.into(), bundle.into());
            with_hash(o).expect("hash")
        };
        // What the metadata watch of unlabelled ExternalSecrets keeps of an object.
        let foreign = |o: &DynamicObject| crate::cache::Foreign {
            uid: None,
            resource_version: None,
            owners: vec![],
            applied_hash: o.annotations().get(APPLIED_HASH_ANNOTATION).cloned(),
        };
        let want = labelled("a");
        let mut stripped = want.clone();
        stripped.labels_mut().clear();
        assert!(foreign(&stripped).carries(&want), "labels removed by hand");
        let mut others = labelled("b");
        others.labels_mut().clear();
        assert!(!foreign(&others).carries(&want), "another bundle's child");
        stripped.annotations_mut().clear();
        assert!(!foreign(&stripped).carries(&want), "released: hash removed");

        // Stamped by v0.1.0 and its labels removed since: still recognised, still only ours.
        let mut old = as_v0_1_0(&want);
        assert_ne!(old.annotations(), want.annotations());
        old.labels_mut().clear();
        assert!(foreign(&old).carries(&want), "v0.1.0's hash of our child");
        let mut others_old = as_v0_1_0(&labelled("b"));
        others_old.labels_mut().clear();
        assert!(
            !foreign(&others_old).carries(&want),
            "v0.1.0's hash of another's"
        );
        let forged = crate::cache::Foreign {
            applied_hash: Some("0123456789abcdef".into()),
            ..foreign(&old)
        };
        assert!(
            !forged.carries(&want),
            "a legacy-format hash of something else"
        );
    }

    #[test]
    fn hash_is_stable_and_changes_with_content() {
        let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
        let a = DynamicObject::new("a", &ar).data(json!({"spec": {"refreshInterval": "1h"}}));
        let b = DynamicObject::new("a", &ar).data(json!({"spec": {"refreshInterval": "2h"}}));
        let hash = |o: &DynamicObject| {
            with_hash(o.clone()).expect("hash").annotations()[APPLIED_HASH_ANNOTATION].clone()
        };
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
