//! The migration guide's field table cannot go stale: it is generated from the import's own
//! table (`eso::import::FIELDS`), which must list every ExternalSecret field of every vendored ESO
//! CRD, name bundle fields our CRD has, and behave as each row says (carried fields come back
//! from render unchanged, refused ones are refused by name).
//! `SB_BLESS=1 cargo test -p secretbundle-tests --test migration_doc` rewrites the table.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use kube::CustomResourceExt as _;
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_controller::eso::import::{self, FIELDS};
use secretbundle_controller::reconcile::render::render;
use secretbundle_tests::repo_root;
use serde::Deserialize as _;
use serde_json::{Value, json};

const BEGIN: &str = "<!-- BEGIN import-fields: generated from the import's table; SB_BLESS=1 cargo test -p secretbundle-tests --test migration_doc -->";
const END: &str = "<!-- END import-fields -->";

fn guide() -> std::path::PathBuf {
    repo_root().join("docs/migration-from-helmfile.md")
}

fn table() -> String {
    let mut out = String::from("| ExternalSecret field | Bundle field | Notes |\n|---|---|---|\n");
    for f in FIELDS {
        let bundle = f
            .bundle
            .map_or("**refused**".to_string(), |b| format!("`{b}`"));
        out.push_str(&format!("| `{}` | {bundle} | {} |\n", f.es, f.note));
    }
    out
}

#[test]
fn the_guide_prints_the_import_table() -> Result<()> {
    let text = std::fs::read_to_string(guide())?;
    let start = text
        .find(BEGIN)
        .context("the guide has no BEGIN import-fields marker")?
        + BEGIN.len();
    let end = text
        .find(END)
        .context("the guide has no END import-fields marker")?;
    let want = format!("\n{}", table());
    if text[start..end] != want {
        if std::env::var_os("SB_BLESS").is_some() {
            std::fs::write(guide(), format!("{}{want}{}", &text[..start], &text[end..]))?;
            return Ok(());
        }
        anyhow::bail!(
            "the guide's field table is stale: run SB_BLESS=1 cargo test -p secretbundle-tests --test migration_doc"
        );
    }
    Ok(())
}

/// A schema leaf: its type and enum values.
#[derive(Clone, Debug)]
struct Leaf {
    kind: String,
    values: Vec<Value>,
}

/// Every leaf under `node`: `a.b`, `a.list[].c`; maps (`additionalProperties`) and lists of
/// scalars are leaves themselves.
fn leaves(node: &Value, at: &str, out: &mut BTreeMap<String, Leaf>) {
    if let Some(props) = node["properties"].as_object() {
        for (k, v) in props {
            leaves(v, &format!("{at}.{k}"), out);
        }
    } else if node["type"] == "array" && node["items"]["properties"].is_object() {
        leaves(&node["items"], &format!("{at}[]"), out);
    } else {
        let kind = node["type"].as_str().unwrap_or("any").to_string();
        let values = node["enum"].as_array().cloned().unwrap_or_default();
        out.insert(at.to_string(), Leaf { kind, values });
    }
}

/// The spec leaves of every served v1 and v1beta1 ExternalSecret schema vendored.
fn eso_fields() -> Result<BTreeMap<String, Leaf>> {
    let mut out = BTreeMap::new();
    let dir = repo_root().join("tests/fixtures/eso-crds");
    for release in std::fs::read_dir(&dir)? {
        let file = release?
            .path()
            .join("external-secrets.io_externalsecrets.yaml");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd = Value::deserialize(doc)?;
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                if EsoVersion::parse(v["name"].as_str().unwrap_or_default()).is_some() {
                    leaves(
                        &v["schema"]["openAPIV3Schema"]["properties"]["spec"],
                        "spec",
                        &mut out,
                    );
                }
            }
        }
    }
    anyhow::ensure!(out.len() > 50, "too few ESO fields found: {}", out.len());
    Ok(out)
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
}

#[test]
fn every_field_of_every_vendored_eso_is_in_the_table_and_no_row_is_stale() -> Result<()> {
    let eso = eso_fields()?;
    let missing: Vec<&String> = eso
        .keys()
        .filter(|p| {
            !FIELDS.iter().any(|f| match f.bundle {
                Some(_) => f.es == p.as_str(),
                None => under(p, f.es),
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ESO fields the import table does not list: {missing:?}"
    );
    let stale: Vec<&str> = FIELDS
        .iter()
        .map(|f| f.es)
        .filter(|es| !eso.keys().any(|p| under(p, es)))
        .collect();
    assert!(stale.is_empty(), "rows no vendored ESO has: {stale:?}");

    let mut ours = BTreeMap::new();
    let crd = serde_json::to_value(SecretBundle::crd())?;
    leaves(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        "spec",
        &mut ours,
    );
    for f in FIELDS {
        let Some(b) = f.bundle else { continue };
        // A row may name the bundle-level field and its per-entry override; the first is checked.
        let path = format!("spec.{b}");
        assert!(
            ours.keys().any(|p| under(p, &path)),
            "{}: our CRD has no {path}",
            f.es
        );
    }
    Ok(())
}

/// An ExternalSecret setting every field the table says is carried.
fn everything() -> Value {
    let rr = json!({"key": "k", "property": "p", "version": "2", "conversionStrategy": "Unicode",
                    "decodingStrategy": "Base64", "metadataPolicy": "Fetch"});
    let items = json!([{"key": "t", "templateAs": "KeysAndValues"}]);
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "all", "namespace": "ns"},
        "spec": {
            "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
            "refreshInterval": "10m", "refreshPolicy": "OnChange",
            "target": {"name": "out", "creationPolicy": "Orphan", "deletionPolicy": "Retain", "immutable": true,
                "template": {"type": "Opaque", "engineVersion": "v2", "mergePolicy": "Merge",
                    "metadata": {"labels": {"l": "v"}, "annotations": {"a": "v"}},
                    "data": {"k": "{{ .p }}"},
                    "templateFrom": [{"configMap": {"name": "c", "items": items}, "target": "Annotations"},
                                     {"secret": {"name": "s", "items": items}}]}},
            "data": [{"secretKey": "s", "remoteRef": rr}],
            "dataFrom": [
                {"extract": rr, "rewrite": [{"regexp": {"source": "^a", "target": "b"}}]},
                {"find": {"path": "p/", "name": {"regexp": "^x"}, "tags": {"t": "v"},
                          "conversionStrategy": "Unicode", "decodingStrategy": "Auto"},
                 "rewrite": [{"transform": {"template": "{{ .value }}"}}]},
                {"sourceRef": {"generatorRef": {"apiVersion": "generators.external-secrets.io/v1alpha1",
                                                "kind": "Password", "name": "pw"}}}]
        }
    })
}

fn flat(v: &Value, at: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| flat(c, &format!("{at}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| flat(c, &format!("{at}[{i}]"), out)),
        s => {
            out.insert(at.to_string(), s.clone());
        }
    }
}

/// Sets `value` at the first place `pattern` (e.g. `spec.data[].sourceRef`) fits in `v`.
fn set_first(v: &mut Value, segments: &[&str], value: &Value) -> bool {
    match segments {
        [] => false,
        [last] => v
            .as_object_mut()
            .is_some_and(|m| m.insert(last.to_string(), value.clone()).is_none()),
        [seg, rest @ ..] => match seg.strip_suffix("[]") {
            Some(key) => v[key]
                .as_array_mut()
                .is_some_and(|items| items.iter_mut().any(|i| set_first(i, rest, value))),
            None => v.get_mut(*seg).is_some_and(|c| set_first(c, rest, value)),
        },
    }
}

#[test]
fn each_row_behaves_as_it_says() -> Result<()> {
    let eso = eso_fields()?;
    let base = everything();
    let mut given = BTreeMap::new();
    flat(&base["spec"], "spec", &mut given);
    let pattern = secretbundle_controller::eso::schema::pattern;

    // Carried: every row is exercised by `everything`, which imports without a refusal and
    // renders back with each of its fields unchanged.
    let e = import::entry(&base).map_err(anyhow::Error::msg)?;
    assert_eq!(e.refusals, vec![]);
    let b = import::bundles(vec![e], None)
        .bundles
        .pop()
        .context("a bundle")?;
    let mut rendered = BTreeMap::new();
    flat(
        &serde_json::to_value(&render(&b, EsoVersion::V1)?[0])?["spec"],
        "spec",
        &mut rendered,
    );
    for f in FIELDS.iter().filter(|f| f.bundle.is_some()) {
        let hit: Vec<&String> = given.keys().filter(|p| under(&pattern(p), f.es)).collect();
        assert!(
            !hit.is_empty(),
            "{}: not exercised by the test ExternalSecret",
            f.es
        );
        for p in hit {
            assert_eq!(
                rendered.get(p),
                given.get(p),
                "{p} did not come back from render"
            );
        }
    }

    // Refused: set on its own, each is refused, naming the field.
    for f in FIELDS.iter().filter(|f| f.bundle.is_none()) {
        let sample = match eso.get(f.es) {
            Some(Leaf { values, .. }) if !values.is_empty() => values[0].clone(),
            Some(Leaf { kind, .. }) if kind == "array" => json!(["x"]),
            Some(Leaf { kind, .. }) if kind == "string" => json!("x"),
            _ => json!({"probe": "x"}),
        };
        let mut x = base.clone();
        let segments: Vec<&str> = f.es.split('.').collect();
        assert!(
            set_first(&mut x, &segments, &sample),
            "{}: no place for it in the test object",
            f.es
        );
        let e = import::entry(&x).map_err(anyhow::Error::msg)?;
        let named: Vec<_> = e
            .refusals
            .iter()
            .filter(|r| pattern(&r.field) == f.es)
            .collect();
        assert_eq!(named.len(), 1, "{}: refusals {:?}", f.es, e.refusals);
        assert_eq!(named[0].message, f.note);
    }
    Ok(())
}
