use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::json;

use super::*;
use crate::eso::{EsoKind, EsoVersion};

/// A child as render makes one: labels, no annotations, a spec.
fn child() -> DynamicObject {
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let mut o = DynamicObject::new("db", &ar).within("apps").data(json!({"spec": {
        "refreshInterval": "1h",
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
        "target": {"name": "db", "creationPolicy": "Owner"},
        "data": [{"secretKey": "password", "remoteRef": {"key": "apps/db", "property": "password"}}]
    }}));
    o.labels_mut()
        .insert("secrets.ameide.io/bundle".into(), "apps".into());
    o
}

/// v0.1.0's `with_hash`, verbatim: what the legacy hash must reproduce.
fn v0_1_0(obj: &DynamicObject) -> String {
    let bytes = serde_json::to_vec(obj).expect("json");
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[test]
fn current_hash_is_pinned() {
    // Pinned: a change here rewrites every child in every cluster on upgrade. The input is
    // the canonical form below; `printf %s '<it>' | sha256sum` gives the same digest.
    let mut bytes = Vec::new();
    canonical(&serde_json::to_value(child()).expect("json"), &mut bytes).expect("canonical");
    assert_eq!(
        String::from_utf8(bytes).expect("utf8"),
        r#"{"apiVersion":"external-secrets.io/v1","kind":"ExternalSecret","metadata":{"labels":{"secrets.ameide.io/bundle":"apps"},"name":"db","namespace":"apps"},"spec":{"data":[{"remoteRef":{"key":"apps/db","property":"password"},"secretKey":"password"}],"refreshInterval":"1h","secretStoreRef":{"kind":"ClusterSecretStore","name":"vault"},"target":{"creationPolicy":"Owner","name":"db"}}}"#
    );
    assert_eq!(
        current(&child()).expect("hash"),
        "sha256:caf911dd154ff7cf7d5991347a3b1fa78e2b4c9198050294a24dd99e6f028c8f"
    );
}

#[test]
fn canonical_form_sorts_keys_at_every_depth() {
    let v: Value =
        serde_json::from_str(r#"{"b":1,"a":[{"d":"x","c":[true,null,1.5]}]}"#).expect("json");
    let mut out = Vec::new();
    canonical(&v, &mut out).expect("canonical");
    assert_eq!(out, br#"{"a":[{"c":[true,null,1.5],"d":"x"}],"b":1}"#);
}

#[test]
fn current_hash_changes_with_content() {
    let mut other = child();
    other.data["spec"]["refreshInterval"] = json!("2h");
    assert_ne!(current(&child()).expect("a"), current(&other).expect("b"));
    assert!(!is_legacy(&current(&child()).expect("a")));
}

#[test]
fn legacy_hash_is_what_v0_1_0_wrote() {
    // The frozen algorithm equals the standard library's, as the pinned toolchain has it...
    let mut objects = vec![child()];
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65] {
        objects.push(child().data(json!({"spec": {"x": "y".repeat(n)}})));
    }
    for o in &objects {
        assert_eq!(legacy(o).expect("legacy"), v0_1_0(o));
    }
    for len in 0..40 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let mut h = DefaultHasher::new();
        h.write(&data);
        assert_eq!(siphash13(&data), h.finish(), "{len} bytes");
    }
    // ...and stays pinned should a later standard library change `DefaultHasher`.
    assert_eq!(legacy(&child()).expect("legacy"), "4e7ba27483ee8e2d");
    assert!(is_legacy(&legacy(&child()).expect("legacy")));
}

#[test]
fn legacy_format_is_sixteen_lowercase_hex_digits() {
    assert!(is_legacy("0123456789abcdef"));
    for not in [
        "0123456789ABCDEF",
        "0123456789abcde",
        "0123456789abcdef0",
        "",
        "sha256:00",
    ] {
        assert!(!is_legacy(not), "{not}");
    }
}
