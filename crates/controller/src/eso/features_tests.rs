//! The version matrix: which field needs which ESO, held to the vendored CRDs of each release.

use std::path::PathBuf;

use secretbundle_api::SecretBundle;

use super::*;
use crate::eso::CrdSummary;
use crate::reconcile::render::render;
use crate::reconcile::render::tests::{EVERY_FIELD, bundle};

/// The releases vendored in `tests/fixtures/eso-crds`, with the API version each is written in.
const VENDORED: [(&str, EsoVersion); 4] = [
    ("v0.10.7", EsoVersion::V1beta1),
    ("v0.16.2", EsoVersion::V1),
    ("v0.16.2", EsoVersion::V1beta1),
    ("v2.9.0", EsoVersion::V1),
];

fn served(release: &str, version: EsoVersion) -> ServedSchema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eso-crds")
        .join(release)
        .join("external-secrets.io_externalsecrets.yaml");
    let text = std::fs::read_to_string(&path).expect("vendored CRD");
    let crd: CrdSummary = serde_yaml::from_str(&text).expect("CRD parses");
    ServedSchema::of(&crd, version).expect("served schema")
}

fn release(name: &str) -> Release {
    Release::parse(name).expect("release")
}

fn gaps(b: &SecretBundle, caps: Capabilities<'_>, version: EsoVersion) -> Vec<Unsupported> {
    let children = render(b, version).expect("renders");
    check(&children, caps)
        .err()
        .map(|e| e.fields)
        .unwrap_or_default()
}

fn fields(u: &[Unsupported]) -> Vec<&str> {
    u.iter().map(|u| u.field.as_str()).collect()
}

#[test]
fn releases_parse_order_and_pick_their_api_version() {
    assert_eq!(Release::parse("v0.16.2"), Some(Release(0, 16, 2)));
    assert_eq!(Release::parse("2.9.0"), Some(Release(2, 9, 0)));
    for bad in ["v1", "v1beta1", "v0.16", "v0.16.2.1", "latest"] {
        assert_eq!(Release::parse(bad), None, "{bad}");
    }
    assert!(release("v0.9.10") < release("v0.10.7"));
    assert_eq!(release("v0.16.2").to_string(), "v0.16.2");
    assert_eq!(release("v0.15.1").api_version(), EsoVersion::V1beta1);
    assert_eq!(release("v0.16.1").api_version(), EsoVersion::V1);
}

#[test]
fn every_field_is_served_from_v0_16_on_and_all_but_refresh_policy_by_v0_10_7() {
    let b = bundle(EVERY_FIELD);
    for (name, version) in VENDORED {
        let live = gaps(&b, Capabilities::Installed(&served(name, version)), version);
        let offline = gaps(&b, Capabilities::Release(release(name)), version);
        let expected: Vec<&str> = if name == "v0.10.7" {
            // db, generated and pull set refreshPolicy; nothing-written does not.
            vec![
                "spec.secrets[0].refreshPolicy",
                "spec.secrets[1].refreshPolicy",
                "spec.secrets[2].refreshPolicy",
            ]
        } else {
            vec![]
        };
        assert_eq!(fields(&live), expected, "{name} {version:?}: installed CRD");
        assert_eq!(
            fields(&offline),
            expected,
            "{name} {version:?}: release table"
        );
        assert!(live.iter().all(|u| u.since == Some(Release(0, 16, 1))));
    }
}

#[test]
fn generator_kinds_newer_than_the_installed_eso_are_refused() {
    for row in FEATURES.iter().filter(|f| f.path == KIND) {
        let kind = row.value.expect("kind rows name a kind");
        let b = bundle(&format!(
            "metadata: {{name: g}}\nspec: {{targetNamespace: a, secretStoreRef: {{name: s}}, secrets: [{{name: x, dataFrom: [{{sourceRef: {{generatorRef: {{kind: {kind}, name: n}}}}}}]}}]}}"
        ));
        for (name, version) in VENDORED {
            let live = gaps(&b, Capabilities::Installed(&served(name, version)), version);
            let offline = gaps(&b, Capabilities::Release(release(name)), version);
            let newer = release(name) < row.since;
            assert_eq!(!offline.is_empty(), newer, "{kind} on {name}: table");
            // v0.10.7's CRD takes any kind (no enum): only the table knows it lacks these.
            let schema_knows = name != "v0.10.7";
            assert_eq!(
                !live.is_empty(),
                newer && schema_knows,
                "{kind} on {name} {version:?}: CRD"
            );
            for u in live.iter().chain(&offline) {
                assert_eq!(
                    u.field,
                    "spec.secrets[0].dataFrom[0].sourceRef.generatorRef.kind"
                );
                assert_eq!(u.gap.value.as_deref(), Some(kind));
                assert_eq!(u.since, Some(row.since));
            }
        }
    }
}

#[test]
fn the_refusal_names_field_eso_version_and_the_way_out() {
    let b = bundle(EVERY_FIELD);
    let children = render(&b, EsoVersion::V1beta1).expect("renders");
    let schema = served("v0.10.7", EsoVersion::V1beta1);
    let err = check(&children, Capabilities::Installed(&schema)).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "spec.secrets[0].refreshPolicy needs ESO v0.16.1 or later: the installed ExternalSecret CRD \
         (external-secrets.io/v1beta1) has no spec.refreshPolicy; spec.secrets[1].refreshPolicy needs \
         ESO v0.16.1 or later: the installed ExternalSecret CRD (external-secrets.io/v1beta1) has no \
         spec.refreshPolicy; spec.secrets[2].refreshPolicy needs ESO v0.16.1 or later: the installed \
         ExternalSecret CRD (external-secrets.io/v1beta1) has no spec.refreshPolicy. Nothing is \
         applied until ESO (its CRDs) is upgraded; the bundle then proceeds by itself"
    );
    let offline = check(&children, Capabilities::Release(release("v0.15.1"))).expect_err("refused");
    assert!(
        offline
            .to_string()
            .starts_with("spec.secrets[0].refreshPolicy needs ESO v0.16.1 or later: ESO v0.15.1 has no spec.refreshPolicy"),
        "{offline}"
    );
    let kind = EsoTooOld {
        by: "ESO v0.16.2".into(),
        fields: vec![Unsupported {
            field: "spec.secrets[0].dataFrom[0].sourceRef.generatorRef.kind".into(),
            gap: Gap {
                path: "spec.dataFrom[0].sourceRef.generatorRef.kind".into(),
                value: Some("SSHKey".into()),
            },
            since: Some(Release(2, 9, 0)),
        }],
    };
    let unknown = EsoTooOld {
        by: "ESO v0.16.2".into(),
        fields: vec![Unsupported {
            field: "spec.secrets[0].template".into(),
            gap: Gap {
                path: "spec.target.template.engineVersion".into(),
                value: None,
            },
            since: None,
        }],
    };
    assert!(unknown.to_string().starts_with(
        "spec.secrets[0].template cannot be expressed: ESO v0.16.2 has no spec.target.template.engineVersion"
    ));
    assert!(kind.to_string().starts_with(
        "spec.secrets[0].dataFrom[0].sourceRef.generatorRef.kind SSHKey needs ESO v2.9.0 or later: \
         ESO v0.16.2 does not accept \"SSHKey\" for spec.dataFrom[0].sourceRef.generatorRef.kind"
    ));
}

#[test]
fn eso_fields_map_back_to_the_bundle_fields_they_come_from() {
    for (es, field) in [
        ("spec.refreshPolicy", "refreshPolicy"),
        ("spec.target.creationPolicy", "creationPolicy"),
        ("spec.target.name", "targetName"),
        ("spec.target.template.type", "type"),
        ("spec.target.template.metadata.labels.app", "labels"),
        ("spec.target.template.engineVersion", "template"),
        (
            "spec.target.template.templateFrom[1].target",
            "template.templateFrom[1].target",
        ),
        (
            "spec.data[2].remoteRef.metadataPolicy",
            "data[2].remoteRef.metadataPolicy",
        ),
        (
            "spec.dataFrom[0].sourceRef.generatorRef.apiVersion",
            "dataFrom[0].sourceRef.generatorRef",
        ),
        ("spec.secretStoreRef.kind", "secretStoreRef.kind"),
    ] {
        assert_eq!(bundle_field(es), field, "{es}");
    }
}

#[test]
fn a_missing_object_is_one_gap() {
    let spec = serde_json::json!({"refreshPolicy": "OnChange", "target": {"name": "x"}});
    let g = release_gaps(Release(0, 10, 7), &spec);
    assert_eq!(g.len(), 1);
    assert!(covers("spec.a", "spec.a[0].b") && covers("spec.a", "spec.a.b"));
    assert!(!covers("spec.a", "spec.ab"));
}
