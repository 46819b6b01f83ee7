//! The ExternalSecret schema an installed CRD serves, and which parts of a child it cannot hold.
//!
//! The API server silently prunes fields its schema does not know, so a child with a field the
//! installed ESO predates would be applied without it. Walking the child against the served
//! `openAPIV3Schema` finds such fields (and enum values the schema rejects) before anything is
//! applied.

use serde_json::Value;

use super::{CrdSummary, EsoVersion};

/// The `openAPIV3Schema` of one served version of the ExternalSecret CRD.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedSchema {
    pub version: EsoVersion,
    root: Value,
}

/// A part of a child that a schema cannot hold: a field it lacks, or a value its enum lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Where, in the ExternalSecret, e.g. `spec.dataFrom[1].sourceRef.generatorRef.kind`.
    pub path: String,
    /// The rejected value, when the field exists but does not accept it.
    pub value: Option<String>,
}

impl Gap {
    /// The path without list indices, e.g. `spec.dataFrom[].sourceRef.generatorRef.kind`.
    pub fn pattern(&self) -> String {
        pattern(&self.path)
    }
}

/// `path` without list indices.
pub fn pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

impl ServedSchema {
    /// The schema `crd` serves for `version`, if it has one.
    pub fn of(crd: &CrdSummary, version: EsoVersion) -> Option<Self> {
        let root = crd.open_api_schema(version)?.clone();
        Some(Self { version, root })
    }

    /// Every part of `spec` (an ExternalSecret's spec) this schema cannot hold.
    pub fn gaps(&self, spec: &Value) -> Vec<Gap> {
        let mut out = Vec::new();
        // Without a spec schema nothing can be checked; the (strict) apply will tell.
        if let Some(node) = self.root.pointer("/properties/spec") {
            walk(node, spec, "spec".into(), &mut out);
        }
        out
    }
}

fn walk(node: &Value, value: &Value, path: String, out: &mut Vec<Gap>) {
    let preserves = node
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match value {
        Value::Object(fields) => {
            for (key, v) in fields {
                let child = format!("{path}.{key}");
                if let Some(n) = node.pointer(&format!("/properties/{}", escape(key))) {
                    walk(n, v, child, out);
                } else {
                    match node.get("additionalProperties") {
                        Some(n @ Value::Object(_)) => walk(n, v, child, out),
                        Some(Value::Bool(true)) => {}
                        _ if preserves => {}
                        _ => out.push(Gap {
                            path: child,
                            value: None,
                        }),
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(n) = node.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(n, v, format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => {
            if let Some(allowed) = node.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                out.push(Gap {
                    path,
                    value: Some(s.clone()),
                });
            }
        }
        // Types are the apiserver's to check; the renderer writes the schema's types.
        _ => {}
    }
}

/// JSON pointer escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(spec: Value) -> ServedSchema {
        ServedSchema {
            version: EsoVersion::V1,
            root: json!({"type": "object", "properties": {"spec": spec}}),
        }
    }

    #[test]
    fn finds_missing_fields_and_rejected_enum_values() {
        let s = schema(json!({"type": "object", "properties": {
            "target": {"type": "object", "properties": {
                "creationPolicy": {"type": "string", "enum": ["Owner", "Merge"]},
                "template": {"type": "object", "properties": {
                    "data": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
            "dataFrom": {"type": "array", "items": {"type": "object", "properties": {
                "extract": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}
        }}));
        let gaps = s.gaps(&json!({
            "refreshPolicy": "CreatedOnce",
            "target": {"creationPolicy": "Orphan", "template": {"data": {"url": "{{ .x }}"}}},
            "dataFrom": [{"extract": {"anything": 1}}, {"find": {}}]
        }));
        assert_eq!(
            gaps,
            [
                Gap {
                    path: "spec.dataFrom[1].find".into(),
                    value: None
                },
                Gap {
                    path: "spec.refreshPolicy".into(),
                    value: None
                },
                Gap {
                    path: "spec.target.creationPolicy".into(),
                    value: Some("Orphan".into())
                },
            ]
        );
        assert_eq!(gaps[0].pattern(), "spec.dataFrom[].find");
    }

    #[test]
    fn a_crd_serves_the_schema_of_the_version_asked_for() {
        let crd: CrdSummary = serde_json::from_value(json!({
            "metadata": {"name": "externalsecrets.external-secrets.io"},
            "spec": {"group": "external-secrets.io", "scope": "Namespaced",
                "names": {"plural": "externalsecrets", "kind": "ExternalSecret"},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"refreshPolicy": {"type": "string"}}}}}}}
                ]}
        }))
        .expect("crd");
        let v1 = ServedSchema::of(&crd, EsoVersion::V1).expect("v1 schema");
        assert!(v1.gaps(&json!({"refreshPolicy": "OnChange"})).is_empty());
        let beta = ServedSchema::of(&crd, EsoVersion::V1beta1).expect("v1beta1 schema");
        assert!(beta.gaps(&json!({"refreshPolicy": "OnChange"})).is_empty()); // no spec schema: unchecked
    }
}
