//! `import` is the inverse of `render`, as properties over random bundles (tests/src/strategies):
//! render -> import -> render gives every field ESO reads back; an ExternalSecret with something
//! a bundle cannot express is refused, and each of its fields is either carried or named in a
//! refusal (never dropped silently); and on a real API server with each vendored ESO CRD set, the
//! imported bundles pass our CRD and their children ESO's, equal to the originals as applied.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{CustomResourceExt as _, ResourceExt as _};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use secretbundle_api::{SecretBundle, SecretBundleSpec, SecretStoreRef};
use secretbundle_controller::eso::import::{self, Entry};
use secretbundle_controller::eso::{
    Capabilities, EXTERNAL_SECRET_CRD, EsoKind, EsoVersion, ServedSchema, features,
};
use secretbundle_controller::reconcile::render::render;
use secretbundle_tests::controlplane::{ControlPlane, Options};
use secretbundle_tests::{apply_crds, eso, strategies};
use serde_json::{Value, json};

/// Cases of the pure properties; `make fuzz` can raise it (SB_ROUNDTRIP_CASES).
fn cases() -> u32 {
    std::env::var("SB_ROUNDTRIP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn version() -> impl Strategy<Value = EsoVersion> {
    prop_oneof![Just(EsoVersion::V1), Just(EsoVersion::V1beta1)]
}

/// A child as a cluster or a manifest holds it: apiVersion, kind, name and namespace.
fn as_object(child: &DynamicObject) -> Value {
    serde_json::to_value(child).unwrap_or_default()
}

fn import_children(children: &[DynamicObject]) -> Vec<Entry> {
    children
        .iter()
        .map(|c| import::entry(&as_object(c)).expect("an ExternalSecret"))
        .collect()
}

/// Bundles with at least one secret that reads a store: one fed only by generators cannot be
/// imported (a bundle needs a store, and such children name none).
fn reads_a_store(b: &SecretBundle) -> bool {
    b.spec.secrets.iter().any(|s| s.reads_store())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn render_import_render_gives_every_field_back(
        b in strategies::bundle().prop_filter("reads a store", reads_a_store),
        v in version(),
    ) {
        let first = render(&b, v).expect("renders");
        let entries = import_children(&first);
        for e in &entries {
            prop_assert!(e.refusals.is_empty(), "{}: {:?}", e.id(), e.refusals);
        }
        let imported = import::bundles(entries, Some(&b.metadata.name.clone().unwrap_or_default()));
        prop_assert!(imported.refused.is_empty(), "{:?}", imported.refused);
        prop_assert_eq!(imported.bundles.len(), 1);
        let again = render(&imported.bundles[0], v).expect("renders");
        prop_assert_eq!(again.len(), first.len());
        for (a, f) in again.iter().zip(&first) {
            prop_assert_eq!(a.name_any(), f.name_any());
            prop_assert_eq!(a.namespace(), f.namespace());
            prop_assert_eq!(&a.types, &f.types);
            prop_assert_eq!(&a.data["spec"], &f.data["spec"], "{}", f.name_any());
        }
    }

    #[test]
    fn an_unsupported_field_is_refused_and_no_field_is_lost_silently(
        b in strategies::bundle(),
        v in version(),
        which in 0..UNSUPPORTED,
        pick in any::<prop::sample::Index>(),
    ) {
        let children = render(&b, v).expect("renders");
        let mut object = as_object(pick.get(&children));
        let injected = inject(&mut object["spec"], which, pick.index(1000));
        let e = import::entry(&object).expect("an ExternalSecret");
        prop_assert!(!e.refusals.is_empty(), "{injected} was not refused");
        let rendered = render_entry(&e, v);
        let have: BTreeMap<String, Value> = leaves(&rendered, "spec").into_iter().collect();
        for (path, value) in leaves(&object["spec"], "spec") {
            let kept = have.get(&path) == Some(&value);
            let named = e.refusals.iter().any(|r| covers(&r.field, &path));
            prop_assert!(kept || named, "{path} = {value} lost: neither rendered nor refused ({injected}); refusals {:?}", e.refusals);
        }
    }
}

/// Ways to add what a bundle cannot express.
const UNSUPPORTED: usize = 12;

/// Adds the `which`th unsupported field to an ExternalSecret's spec; returns its description.
fn inject(spec: &mut Value, which: usize, n: usize) -> String {
    let nth = |list: &Value| list.as_array().map_or(0, Vec::len);
    let data = nth(&spec["data"]);
    let from = nth(&spec["dataFrom"]);
    match which {
        1 => spec["target"]["creationPolicy"] = json!("CreateOrMerge"),
        2 => spec["target"]["manifest"] = json!({"apiVersion": "v1", "kind": "ConfigMap"}),
        3 => spec["target"]["template"]["engineVersion"] = json!("v1"),
        4 => spec["target"]["template"]["metadata"]["finalizers"] = json!(["example.com/keep"]),
        5 => {
            let list = spec["target"]["template"]["templateFrom"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut list = list;
            list.push(json!({"literal": "k: {{ .v }}"}));
            spec["target"]["template"]["templateFrom"] = list.into();
        }
        6 if data > 0 => {
            spec["data"][n % data]["sourceRef"] =
                json!({"storeRef": {"name": "other", "kind": "SecretStore"}})
        }
        7 if data > 0 => spec["data"][n % data]["remoteRef"]["nullBytePolicy"] = json!("Fail"),
        8 if from > 0 => {
            spec["dataFrom"][n % from]["sourceRef"]["storeRef"] = json!({"name": "other"})
        }
        9 if from > 0 => {
            let list = spec["dataFrom"][n % from]["rewrite"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut list = list;
            list.push(json!({"merge": {"into": "all"}}));
            spec["dataFrom"][n % from]["rewrite"] = list.into();
        }
        10 => spec["refreshPolicy"] = json!("Sometimes"),
        11 => {
            // An unknown key at a random object of the spec.
            let mut objects = Vec::new();
            paths_of_objects(spec, String::new(), &mut objects);
            let at = &objects[n % objects.len()];
            let node = spec.pointer_mut(at).expect("an object path");
            node["futureField"] = json!({"nested": [1, "two"]});
            return format!("futureField at {at:?}");
        }
        _ => {
            spec["syncWindows"] =
                json!({"kind": "allow", "windows": [{"schedule": "* * * * *", "duration": "1h"}]})
        }
    }
    format!("unsupported field #{which}")
}

fn paths_of_objects(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, c) in m {
                paths_of_objects(c, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                paths_of_objects(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// What an entry renders to on its own (its partial conversion, when refused).
fn render_entry(e: &Entry, v: EsoVersion) -> Value {
    let store = e.store.clone().unwrap_or(SecretStoreRef {
        name: "none".into(),
        kind: None,
    });
    let mut secret = e.secret.clone();
    secret.secret_store_ref = None;
    let b = SecretBundle::new(
        "b",
        SecretBundleSpec {
            target_namespace: e.namespace.clone(),
            secret_store_ref: store,
            refresh_interval: e.refresh_interval.clone(),
            depends_on: Vec::new(),
            suspend: false,
            deletion_policy: Default::default(),
            adoption_policy: Default::default(),
            secrets: vec![secret],
        },
    );
    render(&b, v)
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|c| c.data["spec"].clone())
        .unwrap_or(Value::Null)
}

/// Every scalar of `v` with its path (`spec.data[0].remoteRef.key`).
fn leaves(v: &Value, at: &str) -> Vec<(String, Value)> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, c)| leaves(c, &format!("{at}.{k}")))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, c)| leaves(c, &format!("{at}[{i}]")))
            .collect(),
        Value::Null => Vec::new(),
        scalar => vec![(at.to_string(), scalar.clone())],
    }
}

/// Whether a refusal of `field` names the leaf at `path` (the field itself or its subtree).
fn covers(field: &str, path: &str) -> bool {
    path == field
        || path
            .strip_prefix(field)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Bundles for the schema round trip (SB_ROUNDTRIP_SCHEMA_CASES, default 40), deterministic.
fn schema_bundles() -> anyhow::Result<Vec<SecretBundle>> {
    let n = std::env::var("SB_ROUNDTRIP_SCHEMA_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::deterministic();
    let strategy = strategies::bundle().prop_filter("reads a store", reads_a_store);
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .map(|t| t.current())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect()
}

/// On each vendored ESO CRD set: the imported bundle passes our CRD (strict dry run), and its
/// children, dry-run applied, equal the originals as applied; importing what the API server
/// returns (ESO's defaults filled in, as `import -n` reads it) round-trips too.
#[tokio::test]
async fn imported_bundles_pass_our_crd_and_their_children_eso_s_on_every_release()
-> anyhow::Result<()> {
    let bundles = schema_bundles()?;
    let releases = [
        ("v0.10.7", EsoVersion::V1beta1),
        ("v0.16.2", EsoVersion::V1),
        ("v2.9.0", EsoVersion::V1),
    ];
    let (mut children_checked, mut skipped) = (0, 0);
    for (release, v) in releases {
        let cp = ControlPlane::start_with(Options::default()).await?;
        let client = cp.client().await?;
        let mut crds = eso::crds(release)?;
        crds.push(SecretBundle::crd());
        apply_crds(&client, crds).await?;
        let crd = Api::<secretbundle_controller::eso::CrdSummary>::all(client.clone())
            .get(EXTERNAL_SECRET_CRD)
            .await?;
        let schema = ServedSchema::of(&crd, v).context("served schema")?;
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        let sb = Api::<SecretBundle>::all(client.clone());
        let strict = PatchParams::apply("roundtrip")
            .dry_run()
            .validation_strict();
        for b in &bundles {
            let ns = &b.spec.target_namespace;
            let nsobj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            namespaces
                .patch(ns, &PatchParams::apply("roundtrip"), &Patch::Apply(&nsobj))
                .await?;
            let first = render(b, v)?;
            // What this release cannot hold the gate refuses before anything is applied.
            if features::check(&first, Capabilities::Installed(&schema)).is_err() {
                skipped += 1;
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &EsoKind::ExternalSecret.api_resource(v));
            let mut applied = Vec::new();
            for c in &first {
                applied.push(
                    api.patch(&c.name_any(), &strict, &Patch::Apply(c))
                        .await
                        .with_context(|| format!("{release}: {}", c.name_any()))?,
                );
            }
            // From the rendered children (a manifest) and from the applied ones (a cluster).
            for (source, objects) in [("rendered", &first), ("applied", &applied)] {
                let mut imported = import::bundles(import_children(objects), Some("imported"));
                anyhow::ensure!(
                    imported.refused.is_empty(),
                    "{release} {source}: {:?}",
                    imported.refused
                );
                let bundle = imported.bundles.pop().context("a bundle")?;
                sb.patch("imported", &strict, &Patch::Apply(&bundle))
                    .await
                    .with_context(|| {
                        format!(
                            "{release} {source}: our CRD rejects\n{}",
                            serde_yaml::to_string(&bundle).unwrap_or_default()
                        )
                    })?;
                for (c, want) in render(&bundle, v)?.iter().zip(&applied) {
                    let have = api.patch(&c.name_any(), &strict, &Patch::Apply(c)).await?;
                    anyhow::ensure!(
                        have.data["spec"] == want.data["spec"],
                        "{release} {source}: {} differs as applied:\n{:#}\n{:#}",
                        c.name_any(),
                        have.data["spec"],
                        want.data["spec"]
                    );
                    children_checked += 1;
                }
            }
        }
    }
    println!(
        "schema round trip: {} bundles x 3 releases; {children_checked} children re-applied equal; {skipped} (bundle, release) pairs skipped by the version gate",
        bundles.len()
    );
    Ok(())
}
