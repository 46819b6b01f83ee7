use secretbundle_controller::Reason;
use secretbundle_controller::reconcile::gates::Blocked;
use serde_json::json;

use super::*;

fn child(key: &str) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": key, "namespace": "ns", "uid": "u1", "resourceVersion": "7",
            "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "secretbundle-operator"}],
            "labels": {"secrets.ameide.io/bundle": "b"}},
        "spec": {"refreshInterval": "1h", "data": [{"secretKey": "password",
            "remoteRef": {"key": "db", "property": "password"}}]},
        "status": {"refreshTime": "2026-01-01T00:00:00Z"}
    })
}

#[test]
fn normalising_strips_what_the_apiserver_maintains_and_keeps_the_rest() {
    let n = normalize(&child("a"));
    assert_eq!(
        n["metadata"],
        json!({"name": "a", "namespace": "ns", "labels": {"secrets.ameide.io/bundle": "b"}})
    );
    assert!(n.get("status").is_none());
    assert_eq!(n["spec"], child("a")["spec"]);
}

#[test]
fn a_changed_field_is_one_hunk_naming_it_and_noise_is_no_change() {
    let live = child("a");
    let mut applied = live.clone();
    applied["metadata"]["resourceVersion"] = json!("8");
    applied["metadata"]["managedFields"] = json!([]);
    let same = Outcome::Children {
        bundle: "b".into(),
        changes: vec![Change::Update {
            key: "ns/a".into(),
            live: live.clone(),
            applied: applied.clone(),
            adopted: false,
        }],
    };
    assert_eq!(outcome(&same), Report::default(), "only noise differs");

    applied["spec"]["data"][0]["remoteRef"]["property"] = json!("pass");
    let changed = Outcome::Children {
        bundle: "b".into(),
        changes: vec![Change::Update {
            key: "ns/a".into(),
            live,
            applied,
            adopted: true,
        }],
    };
    let r = outcome(&changed);
    assert_eq!(r.verdict, Verdict::Differs);
    assert_eq!(r.err, "");
    assert!(
        r.out.starts_with(
            "SecretBundle b: would change ExternalSecret ns/a (adopting it)\n\
             --- live/ns/a\n+++ applied/ns/a\n@@ "
        ),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("\n-      property: password\n+      property: pass\n"),
        "{}",
        r.out
    );
    assert_eq!(r.out.lines().filter(|l| l.starts_with("@@")).count(), 1);
}

#[test]
fn creations_and_prunes_are_whole_objects_against_dev_null() {
    let r = outcome(&Outcome::Children {
        bundle: "b".into(),
        changes: vec![
            Change::Create {
                key: "ns/new".into(),
                applied: child("new"),
            },
            Change::Prune {
                key: "ns/old".into(),
                live: child("old"),
            },
        ],
    });
    assert_eq!(r.verdict, Verdict::Differs);
    let out = &r.out;
    assert!(out.starts_with("SecretBundle b: would create ExternalSecret ns/new\n--- /dev/null\n+++ applied/ns/new\n"), "{out}");
    assert!(out.contains("+  name: new\n"), "{out}");
    assert!(out.contains("SecretBundle b: would prune ExternalSecret ns/old: no longer in spec.secrets\n--- live/ns/old\n+++ /dev/null\n"), "{out}");
    assert!(out.contains("-  name: old\n"), "{out}");
    assert!(!out.contains("resourceVersion"), "{out}");
}

#[test]
fn waiting_is_no_difference_but_failing_gates_conflicts_and_rejections_are_errors() {
    let blocked = |reason, message: &str| Outcome::Blocked {
        bundle: "b".into(),
        blocked: Blocked {
            reason,
            message: message.into(),
        },
    };
    let r = outcome(&blocked(
        Reason::WaitingForNamespace,
        r#"namespace "ns" does not exist"#,
    ));
    assert_eq!(r.verdict, Verdict::Same);
    assert_eq!(
        r.out,
        "SecretBundle b: WaitingForNamespace: namespace \"ns\" does not exist; nothing would be applied or pruned now\n"
    );
    let r = outcome(&blocked(
        Reason::EsoUpgradeRequired,
        "spec.x needs ESO v0.10",
    ));
    assert_eq!((r.verdict, r.out.as_str()), (Verdict::Error, ""));
    assert_eq!(
        r.err,
        "SecretBundle b: EsoUpgradeRequired: spec.x needs ESO v0.10\n"
    );

    let r = outcome(&Outcome::Children {
        bundle: "b".into(),
        changes: vec![
            Change::Create {
                key: "ns/new".into(),
                applied: child("new"),
            },
            Change::Conflict {
                message: "ExternalSecret ns/x is managed by bundle c".into(),
            },
            Change::Rejected {
                key: "ns/y".into(),
                message: "admission webhook said no".into(),
            },
        ],
    });
    assert_eq!(
        r.verdict,
        Verdict::Error,
        "an error outranks the difference"
    );
    assert!(r.out.contains("would create"));
    assert_eq!(
        r.err,
        "SecretBundle b: Conflict: ExternalSecret ns/x is managed by bundle c\n\
         SecretBundle b: ApplyFailed: ExternalSecret ns/y: admission webhook said no\n"
    );
    let r = outcome(&Outcome::Invalid {
        bundle: "b".into(),
        message: "spec.targetNamespace: Required value".into(),
    });
    assert_eq!(
        (r.verdict, r.err.as_str()),
        (
            Verdict::Error,
            "SecretBundle b: invalid: spec.targetNamespace: Required value\n"
        )
    );
}
