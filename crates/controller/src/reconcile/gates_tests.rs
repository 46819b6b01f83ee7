//! Unit tests of the gates: every branch, from facts alone.
use super::*;
use crate::eso::CrdProblem;
use crate::facts::{StoreKey, referenced_stores};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use secretbundle_api::SecretBundleStatus;

fn bundle() -> SecretBundle {
    serde_yaml::from_str(
        r#"
metadata: {name: observability}
spec:
  targetNamespace: monitoring
  secretStoreRef: {name: ameide-vault}
  dependsOn: [platform]
  secrets:
    - name: grafana
      data: [{secretKey: admin, remoteRef: {key: grafana/admin}}]
    - name: minio
      secretStoreRef: {name: local, kind: SecretStore}
      data: [{secretKey: root, remoteRef: {key: minio/root}}]
"#,
    )
    .expect("valid bundle")
}

fn open_facts() -> Facts {
    Facts {
        namespace: NamespaceFact::Active {
            labels: BTreeMap::from([("env".into(), "local".into())]),
        },
        crd: Ok(EsoVersion::V1),
        eso_schema: None,
        dependencies: vec![("platform".into(), DependencyFact::Ready)],
        cycle: None,
        stores: vec![
            (
                StoreKey {
                    kind: StoreKind::ClusterSecretStore,
                    name: "ameide-vault".into(),
                },
                StoreFact::Ready { conditions: vec![] },
            ),
            (
                StoreKey {
                    kind: StoreKind::SecretStore,
                    name: "local".into(),
                },
                StoreFact::Ready { conditions: vec![] },
            ),
        ],
    }
}

fn blocked(facts: &Facts) -> (Reason, String) {
    let b = evaluate(&bundle(), facts).expect_err("gate should be closed");
    (b.reason, b.message)
}

#[test]
fn all_open_yields_the_crd_version() {
    assert_eq!(evaluate(&bundle(), &open_facts()), Ok(EsoVersion::V1));
}

#[test]
fn gates_close_in_order_with_precise_messages() {
    let mut f = open_facts();
    f.stores[1].1 = StoreFact::Absent;
    assert_eq!(
        blocked(&f),
        (
            Reason::WaitingForStore,
            r#"SecretStore "local" does not exist"#.into()
        )
    );
    f.dependencies[0].1 = DependencyFact::NotReady {
        reason: "WaitingForNamespace".into(),
        progressing: false,
    };
    assert_eq!(
        blocked(&f),
        (
            Reason::WaitingForDependency,
            "waiting for bundles to be Ready: platform (WaitingForNamespace)".into()
        )
    );
    // A dependency being worked on makes this bundle progress too, not idle.
    f.dependencies[0].1 = DependencyFact::NotReady {
        reason: "SecretsNotReady".into(),
        progressing: true,
    };
    assert_eq!(blocked(&f).0, Reason::DependencyProgressing);
    f.dependencies[0].1 = DependencyFact::NotReady {
        reason: "WaitingForNamespace".into(),
        progressing: false,
    };
    f.cycle = Some(vec![
        "observability".into(),
        "platform".into(),
        "observability".into(),
    ]);
    assert_eq!(blocked(&f).0, Reason::DependencyCycle);
    assert!(
        blocked(&f)
            .1
            .contains("observability -> platform -> observability")
    );
    f.crd = Err(CrdProblem::Absent);
    assert_eq!(
        blocked(&f),
        (
            Reason::WaitingForCRD,
            "CustomResourceDefinition externalsecrets.external-secrets.io is not installed".into()
        )
    );
    f.namespace = NamespaceFact::Terminating;
    assert_eq!(
        blocked(&f),
        (
            Reason::WaitingForNamespace,
            r#"namespace "monitoring" is terminating"#.into()
        )
    );
    f.namespace = NamespaceFact::Absent;
    assert_eq!(
        blocked(&f),
        (
            Reason::WaitingForNamespace,
            r#"namespace "monitoring" does not exist"#.into()
        )
    );
    let mut suspended = bundle();
    suspended.spec.suspend = true;
    assert_eq!(
        evaluate(&suspended, &f).expect_err("closed").reason,
        Reason::Suspended
    );
}

#[test]
fn store_not_ready_and_not_allowed() {
    let mut f = open_facts();
    f.stores[0].1 = StoreFact::NotReady {
        message: "InvalidProviderConfig".into(),
    };
    assert_eq!(
        blocked(&f),
        (
            Reason::StoreNotReady,
            r#"ClusterSecretStore "ameide-vault" is not Ready: InvalidProviderConfig"#.into()
        )
    );
    f.stores[0].1 = StoreFact::Ready {
        conditions: vec![StoreCondition {
            namespaces: vec!["argocd".into()],
            ..Default::default()
        }],
    };
    assert_eq!(blocked(&f).0, Reason::StoreNotAllowed);
}

#[test]
fn namespace_conditions_follow_eso() {
    let labels = BTreeMap::from([("env".to_string(), "local".to_string())]);
    let by_label: StoreCondition = serde_json::from_value(
        serde_json::json!({"namespaceSelector": {"matchLabels": {"env": "local"}}}),
    )
    .expect("cond");
    let by_name_label: StoreCondition = serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}
        }))
        .expect("cond");
    let by_regex = StoreCondition {
        namespace_regexes: vec!["^moni".into()],
        ..Default::default()
    };
    let other = StoreCondition {
        namespaces: vec!["argocd".into()],
        ..Default::default()
    };
    assert!(namespace_allowed(&[], "monitoring", &labels));
    assert!(namespace_allowed(
        &[other.clone(), by_label],
        "monitoring",
        &labels
    ));
    assert!(namespace_allowed(
        &[by_name_label],
        "monitoring",
        &BTreeMap::new()
    ));
    assert!(namespace_allowed(
        std::slice::from_ref(&by_regex),
        "monitoring",
        &labels
    ));
    assert!(!namespace_allowed(&[other, by_regex], "argocd-x", &labels));
    assert!(!namespace_allowed(
        &[StoreCondition {
            namespaces: vec!["a".into()],
            ..Default::default()
        }],
        "b",
        &labels
    ));
}

#[test]
fn referenced_stores_are_deduplicated() {
    let mut b = bundle();
    b.spec.secrets.push(b.spec.secrets[0].clone());
    let keys: Vec<String> = referenced_stores(&b)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        keys,
        vec![
            r#"ClusterSecretStore "ameide-vault""#,
            r#"SecretStore "local""#
        ]
    );
}

#[test]
fn a_secret_fed_only_by_generators_reads_and_waits_for_no_store() {
    let mut b = bundle();
    b.spec.secrets[1].data.clear();
    b.spec.secrets[1].data_from = vec![
        serde_json::from_value(serde_json::json!(
            {"sourceRef": {"generatorRef": {"kind": "Password", "name": "pw"}}}
        ))
        .expect("dataFrom"),
    ];
    let keys: Vec<String> = referenced_stores(&b)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, vec![r#"ClusterSecretStore "ameide-vault""#]);
}

/// An ExternalSecret schema that serves what the test bundle uses, but no `refreshPolicy`.
fn schema_without_refresh_policy() -> ServedSchema {
    let open = serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crd = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "externalsecrets.external-secrets.io"},
        "spec": {"group": "external-secrets.io", "scope": "Namespaced",
            "names": {"plural": "externalsecrets", "kind": "ExternalSecret"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "secretStoreRef": open, "target": open,
                    "refreshInterval": {"type": "string"},
                    "data": {"type": "array", "items": open}}}}}}}]}
    }))
    .expect("crd");
    ServedSchema::of(&crd, EsoVersion::V1).expect("schema")
}

#[test]
fn a_field_the_installed_eso_lacks_stalls_the_bundle_right_after_the_crd_gate() {
    let mut facts = open_facts();
    facts.eso_schema = Some(std::sync::Arc::new(schema_without_refresh_policy()));
    assert_eq!(evaluate(&bundle(), &facts), Ok(EsoVersion::V1));

    let mut b = bundle();
    b.spec.secrets[1].refresh_policy = Some(secretbundle_api::RefreshPolicy::CreatedOnce);
    facts.dependencies = vec![("platform".into(), DependencyFact::Missing)];
    let blocked = evaluate(&b, &facts).expect_err("refused");
    assert_eq!(blocked.reason, Reason::EsoUpgradeRequired);
    assert!(
        blocked.message.starts_with(
            "spec.secrets[1].refreshPolicy needs ESO v0.16.1 or later: the installed \
             ExternalSecret CRD (external-secrets.io/v1) has no spec.refreshPolicy"
        ),
        "{}",
        blocked.message
    );
    // The same CRD serves the bundle without the field: it goes on to wait for its dependency.
    assert_eq!(
        evaluate(&bundle(), &facts).expect_err("waits").reason,
        Reason::WaitingForDependency
    );
    // Earlier gates come first.
    facts.namespace = NamespaceFact::Absent;
    assert_eq!(
        evaluate(&b, &facts).expect_err("waits").reason,
        Reason::WaitingForNamespace
    );
}

fn with_ready(status: &str, observed: Option<i64>, generation: i64) -> SecretBundle {
    let mut b = bundle();
    b.metadata.generation = Some(generation);
    b.status = Some(SecretBundleStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "WaitingForStore".into(),
            message: String::new(),
            observed_generation: observed,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Default::default(),
            ),
        }],
        ..Default::default()
    });
    b
}

#[test]
fn dependency_ready_only_for_current_generation() {
    assert_eq!(dependency_fact(None), DependencyFact::Missing);
    assert_eq!(
        dependency_fact(Some(&with_ready("True", Some(2), 2))),
        DependencyFact::Ready
    );
    assert!(matches!(
        dependency_fact(Some(&with_ready("True", Some(1), 2))),
        DependencyFact::NotReady { .. }
    ));
    assert_eq!(
        dependency_fact(Some(&with_ready("False", Some(2), 2))),
        DependencyFact::NotReady {
            reason: "WaitingForStore".into(),
            progressing: false,
        }
    );
    let mut reconciling = with_ready("False", Some(2), 2);
    if let Some(s) = reconciling.status.as_mut() {
        let mut c = s.conditions[0].clone();
        c.type_ = "Reconciling".into();
        c.status = "True".into();
        s.conditions.push(c);
    }
    assert_eq!(
        dependency_fact(Some(&reconciling)),
        DependencyFact::NotReady {
            reason: "WaitingForStore".into(),
            progressing: true,
        }
    );
    assert_eq!(
        dependency_fact(Some(&bundle())),
        DependencyFact::NotReady {
            reason: "no status yet".into(),
            progressing: true,
        }
    );
}

#[test]
fn cycles_are_found_with_their_path() {
    let graph = BTreeMap::from([
        ("a", vec!["b"]),
        ("b", vec!["c", "d"]),
        ("c", vec![]),
        ("d", vec!["a"]),
        ("self", vec!["self"]),
    ]);
    let deps = |n: &str| {
        graph
            .get(n)
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        find_cycle("a", &deps),
        Some(vec!["a".into(), "b".into(), "d".into(), "a".into()])
    );
    assert_eq!(find_cycle("c", &deps), None);
    assert_eq!(
        find_cycle("self", &deps),
        Some(vec!["self".into(), "self".into()])
    );
    // b is in the cycle too, but a path from c never returns to c.
    assert_eq!(
        find_cycle("b", &deps),
        Some(vec!["b".into(), "d".into(), "a".into(), "b".into()])
    );
}
