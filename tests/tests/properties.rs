//! Properties of the pure phases (render, gates, status), over bundles the schema accepts. The
//! suite runs proptest's default 256 cases per property; `make fuzz` runs them for ten minutes.
//! The last test takes rendered children to the real ESO CRD schemas of every vendored release
//! (server-side dry run) — the schemas, not our reading of them, decide.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::{
    Capabilities, CrdProblem, EXTERNAL_SECRET_CRD, EsoKind, EsoVersion, ServedSchema, features,
};
use secretbundle_controller::facts::{
    DependencyFact, Facts, NamespaceFact, StoreFact, referenced_stores,
};
use secretbundle_controller::reason::{Phase, Reason};
use secretbundle_controller::reconcile::gates;
use secretbundle_controller::reconcile::render::render;
use secretbundle_controller::status::{self, Report};
use secretbundle_tests::controlplane::{ControlPlane, Options};
use secretbundle_tests::{apply_crds, eso, strategies};

fn version() -> impl Strategy<Value = EsoVersion> {
    prop_oneof![Just(EsoVersion::V1), Just(EsoVersion::V1beta1)]
}

fn reason() -> impl Strategy<Value = Reason> {
    prop::sample::select(Reason::ALL.to_vec())
}

/// Facts about a bundle's world, each gate open or closed at random.
fn facts(bundle: &SecretBundle) -> impl Strategy<Value = Facts> + use<> {
    let deps = bundle.spec.depends_on.clone();
    let stores = referenced_stores(bundle);
    let namespace = prop_oneof![
        Just(NamespaceFact::Absent),
        Just(NamespaceFact::Terminating),
        Just(NamespaceFact::Active {
            labels: BTreeMap::new()
        }),
    ];
    let crd = prop_oneof![
        version().prop_map(Ok),
        Just(Err(CrdProblem::Absent)),
        Just(Err(CrdProblem::NotEstablished)),
    ];
    let dep = prop_oneof![
        Just(DependencyFact::Ready),
        Just(DependencyFact::Missing),
        (reason(), any::<bool>()).prop_map(|(r, progressing)| DependencyFact::NotReady {
            reason: r.as_str().into(),
            progressing,
        }),
    ];
    let store = prop_oneof![
        Just(StoreFact::Ready { conditions: vec![] }),
        Just(StoreFact::Absent),
        ".{0,20}".prop_map(|message| StoreFact::NotReady { message }),
    ];
    (
        namespace,
        crd,
        prop::collection::vec(dep, deps.len()),
        any::<bool>(),
        prop::collection::vec(store, stores.len()),
    )
        .prop_map(
            move |(namespace, crd, dep_facts, cycle, store_facts)| Facts {
                namespace,
                crd,
                // No served schema known: the ESO feature gate has nothing to hold against.
                eso_schema: None,
                dependencies: deps.clone().into_iter().zip(dep_facts).collect(),
                cycle: cycle.then(|| vec!["a".into(), "b".into(), "a".into()]),
                stores: stores.clone().into_iter().zip(store_facts).collect(),
            },
        )
}

fn bundle_with_facts() -> impl Strategy<Value = (SecretBundle, Facts)> {
    strategies::bundle().prop_flat_map(|b| {
        let f = facts(&b);
        (Just(b), f)
    })
}

proptest! {
    // Cases come from PROPTEST_CASES (256 by default); a failure prints its seed and shrunk input.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn render_is_total_deterministic_and_faithful(b in strategies::bundle(), v in version()) {
        let children = render(&b, v).expect("a schema-valid bundle with unique targets renders");
        prop_assert_eq!(children.len(), b.spec.secrets.len());
        prop_assert_eq!(&render(&b, v).expect("renders"), &children);
        for (child, secret) in children.iter().zip(&b.spec.secrets) {
            prop_assert_eq!(child.name_any(), secret.name.clone());
            prop_assert_eq!(child.namespace(), Some(b.spec.target_namespace.clone()));
            prop_assert_eq!(&child.labels()["secrets.ameide.io/bundle"], &b.name_any());
            let api_version = child.types.as_ref().map(|t| t.api_version.clone());
            prop_assert_eq!(api_version, Some(v.api_version()));
            let spec = &child.data["spec"];
            prop_assert_eq!(spec["data"].as_array().map_or(0, Vec::len), secret.data.len());
            prop_assert_eq!(spec["dataFrom"].as_array().map_or(0, Vec::len), secret.data_from.len());
            // Only a Delete bundle owns its children.
            let owned = child.owner_references().len();
            prop_assert_eq!(owned, usize::from(b.spec.deletion_policy == secretbundle_api::DeletionPolicy::Delete));
        }
    }

    #[test]
    fn gates_open_exactly_when_every_precondition_holds((b, f) in bundle_with_facts()) {
        let all_hold = !b.spec.suspend
            && matches!(f.namespace, NamespaceFact::Active { .. })
            && f.crd.is_ok()
            && f.cycle.is_none()
            && f.dependencies.iter().all(|(_, d)| *d == DependencyFact::Ready)
            && f.stores.iter().all(|(_, s)| matches!(s, StoreFact::Ready { .. }));
        match gates::evaluate(&b, &f) {
            Ok(v) => {
                prop_assert!(all_hold);
                prop_assert_eq!(Ok(v), f.crd.clone());
            }
            Err(blocked) => {
                prop_assert!(!all_hold);
                prop_assert!(!blocked.message.is_empty());
                prop_assert_ne!(blocked.reason.phase(), Phase::Ready);
            }
        }
    }

    #[test]
    fn status_is_stable_and_follows_the_phase(b in strategies::bundle(), r in reason(), message in ".{0,40}") {
        let report = Report { reason: r, message, eso_version: None, secrets: vec![], last_handled_refresh: None };
        let t0: Time = serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).expect("time");
        let t1: Time = serde_json::from_value(serde_json::json!("2026-01-01T01:00:00Z")).expect("time");
        let mut b = b;
        let first = status::next_status(&b, &report, &t0);
        b.status = Some(first.clone());
        // No churn: the same report an hour later writes nothing new.
        prop_assert_eq!(&status::next_status(&b, &report, &t1), &first);
        let has = |t: &str| first.conditions.iter().any(|c| c.type_ == t && c.status == "True");
        prop_assert_eq!(has("Ready"), r.phase() == Phase::Ready);
        prop_assert_eq!(has("Reconciling"), r.phase() == Phase::Progressing);
        prop_assert_eq!(has("Stalled"), r.phase() == Phase::Stalled);
        prop_assert!(first.conditions.iter().all(|c| c.observed_generation == b.metadata.generation));
    }

    #[test]
    fn a_reported_cycle_is_a_real_path(edges in prop::collection::btree_map(0u8..8, prop::collection::vec(0u8..8, 0..3), 0..8)) {
        let graph: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(u8::to_string).collect()))
            .collect();
        let deps = |n: &str| graph.get(n).cloned().unwrap_or_default();
        if let Some(path) = gates::find_cycle("0", &deps) {
            prop_assert_eq!(path.first().map(String::as_str), Some("0"));
            prop_assert_eq!(path.last().map(String::as_str), Some("0"));
            for pair in path.windows(2) {
                prop_assert!(deps(&pair[0]).contains(&pair[1]), "{:?} is no edge", pair);
            }
        }
    }
}

/// Bundles to draw for the schema round trip: `SB_SCHEMA_CASES`, or a few for the suite.
fn schema_cases() -> usize {
    std::env::var("SB_SCHEMA_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

#[tokio::test]
async fn rendered_children_are_accepted_by_every_vendored_eso_schema() -> anyhow::Result<()> {
    let mut runner = TestRunner::deterministic();
    let bundles: Vec<SecretBundle> = (0..schema_cases())
        .map(|_| {
            strategies::bundle()
                .new_tree(&mut runner)
                .map(|t| t.current())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let releases = [
        ("v0.10.7", &[EsoVersion::V1beta1][..]),
        ("v0.16.2", &[EsoVersion::V1, EsoVersion::V1beta1][..]),
        ("v2.9.0", &[EsoVersion::V1][..]),
    ];
    let (mut checked, mut refused_total) = (0, 0);
    for (release, versions) in releases {
        let cp = ControlPlane::start_with(Options::default()).await?;
        let client = cp.client().await?;
        apply_crds(&client, eso::crds(release)?).await?;
        let crd = Api::<secretbundle_controller::eso::CrdSummary>::all(client.clone())
            .get(EXTERNAL_SECRET_CRD)
            .await?;
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        let pp = PatchParams::apply("secretbundle-tests");
        for b in &bundles {
            let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": b.spec.target_namespace}});
            namespaces
                .patch(&b.spec.target_namespace, &pp, &Patch::Apply(&ns))
                .await?;
            for v in versions {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &b.spec.target_namespace,
                    &EsoKind::ExternalSecret.api_resource(*v),
                );
                let schema = ServedSchema::of(&crd, *v).context("served schema")?;
                let children = render(b, *v)?;
                // What the version gate refuses must be what the schema cannot hold: those
                // children fail, naming the field; every other child is accepted.
                let refused: BTreeMap<usize, Vec<String>> =
                    match features::check(&children, Capabilities::Installed(&schema)) {
                        Ok(()) => BTreeMap::new(),
                        Err(e) => e.fields.iter().fold(BTreeMap::new(), |mut m, u| {
                            let i = u.field["spec.secrets[".len()..]
                                .split(']')
                                .next()
                                .and_then(|i| i.parse().ok())
                                .unwrap_or(usize::MAX);
                            m.entry(i).or_insert_with(Vec::new).push(u.gap.path.clone());
                            refused_total += 1;
                            m
                        }),
                    };
                for (i, child) in children.iter().enumerate() {
                    let applied = api
                        .patch(
                            &child.name_any(),
                            &pp.clone().dry_run(),
                            &Patch::Apply(child),
                        )
                        .await;
                    match (refused.get(&i), applied) {
                        (None, Ok(_)) => checked += 1,
                        (Some(paths), Err(kube::Error::Api(s))) => {
                            let named = paths.iter().any(|p| {
                                let leaf = p.rsplit('.').next().unwrap_or_default();
                                s.message.contains(leaf.split('[').next().unwrap_or(leaf))
                            });
                            anyhow::ensure!(
                                named,
                                "ESO {release} rejects {} of {} but not for {paths:?}: {}",
                                child.name_any(),
                                b.name_any(),
                                s.message
                            );
                        }
                        (None, Err(e)) => anyhow::bail!(
                            "ESO {release} rejects the {} child of {}: {e}\n{}",
                            v.as_str(),
                            b.name_any(),
                            serde_yaml::to_string(child).unwrap_or_default()
                        ),
                        (Some(_), Err(e)) => return Err(e.into()),
                        (Some(paths), Ok(_)) => anyhow::bail!(
                            "the gate refused {} of {} on ESO {release} for {paths:?}, yet its schema took it",
                            child.name_any(),
                            b.name_any()
                        ),
                    }
                }
            }
        }
    }
    println!(
        "{checked} rendered children accepted by the ESO schemas; {refused_total} fields refused by the version gate and by the schemas alike"
    );
    Ok(())
}
