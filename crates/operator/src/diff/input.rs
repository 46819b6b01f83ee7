//! Reading `-f` inputs: files or stdin, several YAML documents each, kept as raw JSON so the
//! apiserver (not our parser) judges what is valid.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::Value;

/// One non-empty document of an input.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where it came from, for messages: `FILE` or `FILE (document N)`.
    pub source: String,
    pub value: Value,
}

/// A SecretBundle document, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleDoc {
    pub name: String,
    pub source: String,
    pub value: Value,
}

pub fn read_all(files: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    let mut out = Vec::new();
    for path in files {
        let (label, text) = if path.as_os_str() == "-" {
            let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            ("stdin".to_string(), text)
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), text)
        };
        out.extend(parse(&label, &text)?);
    }
    Ok(out)
}

/// The non-empty documents of one input.
pub fn parse(label: &str, text: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{label} (document {})", i + 1);
        let value =
            Value::deserialize(doc).with_context(|| format!("{source} is not valid YAML"))?;
        if !value.is_null() {
            docs.push(Document { source, value });
        }
    }
    // A single document needs no number.
    if let [only] = docs.as_mut_slice() {
        only.source = label.to_string();
    }
    Ok(docs)
}

/// Splits the SecretBundles from other kinds (returned as descriptions, to note and skip). A
/// bundle without a name, or a document that is not an object, is an error.
pub fn bundles(docs: Vec<Document>) -> anyhow::Result<(Vec<BundleDoc>, Vec<String>)> {
    let (mut bundles, mut skipped) = (Vec::new(), Vec::new());
    for Document { source, value } in docs {
        anyhow::ensure!(
            value.is_object(),
            "{source}: not a Kubernetes object (a YAML mapping with apiVersion and kind)"
        );
        let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        if kind != "SecretBundle" || group != secretbundle_api::GROUP {
            let name = text("/metadata/name");
            let what = if kind.is_empty() {
                "an object without kind"
            } else {
                kind
            };
            skipped.push(format!("{what} {name} ({source})").replace("  ", " "));
            continue;
        }
        let name = text("/metadata/name").to_string();
        anyhow::ensure!(!name.is_empty(), "{source}: metadata.name: Required value");
        bundles.push(BundleDoc {
            name,
            source,
            value,
        });
    }
    Ok((bundles, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: secrets.ameide.io/v1alpha1
kind: SecretBundle
metadata: {name: a}
---
---
apiVersion: v1
kind: Namespace
metadata: {name: ns}
";

    #[test]
    fn documents_are_numbered_and_other_kinds_skipped() {
        let docs = parse("k.yaml", TWO).expect("parse");
        assert_eq!(docs.len(), 2, "the empty document is dropped");
        let (bundles, skipped) = bundles(docs).expect("split");
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0].name, "a");
        assert_eq!(bundles[0].source, "k.yaml (document 1)");
        assert_eq!(skipped, ["Namespace ns (k.yaml (document 3))"]);
    }

    #[test]
    fn a_single_document_is_named_by_its_file_and_needs_a_name() {
        let docs = parse(
            "b.yaml",
            "apiVersion: secrets.ameide.io/v1alpha1\nkind: SecretBundle\n",
        )
        .expect("parse");
        assert_eq!(docs[0].source, "b.yaml");
        let e = bundles(docs).expect_err("no name");
        assert_eq!(e.to_string(), "b.yaml: metadata.name: Required value");
    }

    #[test]
    fn bad_yaml_and_scalars_are_errors_naming_the_input() {
        let e = parse("x.yaml", "a: [").expect_err("bad yaml");
        assert!(
            e.to_string()
                .starts_with("x.yaml (document 1) is not valid YAML"),
            "{e}"
        );
        let e = bundles(parse("y.yaml", "just text").expect("parse")).expect_err("scalar");
        assert!(
            e.to_string().starts_with("y.yaml: not a Kubernetes object"),
            "{e}"
        );
    }
}
