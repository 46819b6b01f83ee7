//! The generated CRD carries the validation the apiserver enforces.

use kube::CustomResourceExt;
use secretbundle_api::SecretBundle;

#[test]
fn crd_is_cluster_scoped_with_validation() {
    let crd = serde_json::to_string(&SecretBundle::crd()).expect("serialize crd");
    assert!(crd.contains(r#""scope":"Cluster""#));
    assert!(crd.contains("targetNamespace is immutable"));
    assert!(crd.contains("a bundle cannot depend on itself"));
    assert!(crd.contains(r#""x-kubernetes-list-map-keys":["name"]"#));
    assert!(crd.contains(r#""shortNames":["sb"]"#));
}
