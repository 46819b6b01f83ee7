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

/// Argo CD compares lists whole: a default the API server fills in inside a list item would
/// show as drift forever. So no schema default anywhere under `spec.secrets[]`.
#[test]
fn no_server_side_default_inside_list_items() {
    fn defaults(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "default" {
                        out.push(path.clone());
                    }
                    defaults(v, format!("{path}.{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    defaults(v, path.clone(), out);
                }
            }
            _ => {}
        }
    }
    let crd = serde_json::to_value(SecretBundle::crd()).expect("serialize crd");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut found = Vec::new();
    defaults(
        &schema["properties"]["secrets"],
        "secrets".into(),
        &mut found,
    );
    defaults(
        &schema["properties"]["dependsOn"],
        "dependsOn".into(),
        &mut found,
    );
    assert!(found.is_empty(), "defaults inside list items: {found:?}");
    // The bundle-level ones stay, and are meant.
    assert_eq!(schema["properties"]["refreshInterval"]["default"], "1h");
}
