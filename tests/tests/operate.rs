//! Operating the real binary: least-privilege RBAC proven with `kubectl auth can-i` and by
//! running the operator as its ServiceAccount; leader election across two processes.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::fmt::Write as _;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ListParams, PostParams};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::process::Operator;
use secretbundle_tests::{Env, eso, repo_root, simple_bundle, wait};

const NS: &str = "secretbundle-system";
const SA: &str = "system:serviceaccount:secretbundle-system:secretbundle-operator";

/// (verb, resource, namespace or "" for cluster-wide, expected)
const MATRIX: &[(&str, &str, &str, bool)] = &[
    // The operator's own API.
    ("watch", "secretbundles.secrets.ameide.io", "", true),
    ("patch", "secretbundles.secrets.ameide.io/status", "", true),
    ("delete", "secretbundles.secrets.ameide.io", "", false),
    ("create", "secretbundles.secrets.ameide.io", "", false),
    // Children: full control of ExternalSecrets only.
    (
        "create",
        "externalsecrets.external-secrets.io",
        "argocd",
        true,
    ),
    (
        "delete",
        "externalsecrets.external-secrets.io",
        "argocd",
        true,
    ),
    (
        "create",
        "secretstores.external-secrets.io",
        "argocd",
        false,
    ),
    ("watch", "secretstores.external-secrets.io", "argocd", true),
    ("watch", "clustersecretstores.external-secrets.io", "", true),
    (
        "delete",
        "clustersecretstores.external-secrets.io",
        "",
        false,
    ),
    // Secrets: nothing at all, anywhere.
    ("get", "secrets", "argocd", false),
    ("list", "secrets", "", false),
    ("watch", "secrets", "", false),
    ("create", "secrets", "argocd", false),
    ("get", "externalsecrets.external-secrets.io", "argocd", true),
    // Gates read namespaces and CRDs, and never change them.
    ("watch", "namespaces", "", true),
    ("create", "namespaces", "", false),
    (
        "list",
        "customresourcedefinitions.apiextensions.k8s.io",
        "",
        true,
    ),
    (
        "update",
        "customresourcedefinitions.apiextensions.k8s.io",
        "",
        false,
    ),
    ("create", "events.events.k8s.io", "default", true),
    ("create", "pods", "default", false),
    // Leases only in its own namespace.
    ("update", "leases.coordination.k8s.io", NS, true),
    ("update", "leases.coordination.k8s.io", "kube-system", false),
];

#[tokio::test]
async fn rbac_is_least_privilege_and_sufficient() -> anyhow::Result<()> {
    let mut env = Env::start_with_eso_v1().await?;
    env.stop_operator();
    let base = repo_root().join("deploy/kustomize/base");
    let out = env.kubectl(&["apply", "--server-side", "-k", &base.to_string_lossy()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut report = String::from("| verb | resource | namespace | allowed |\n|---|---|---|---|\n");
    for (verb, resource, ns, expected) in MATRIX {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", SA];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        } else {
            args.push("--all-namespaces");
        }
        let out = env.kubectl(&args)?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            answer == "yes",
            *expected,
            "can-i {verb} {resource} in {ns:?}: {answer}"
        );
        writeln!(
            report,
            "| {verb} | {resource} | {} | {answer} |",
            if ns.is_empty() { "(all)" } else { ns }
        )?;
    }
    // Every denial stands beside an allowance for the same subject: the answers are not all "no".
    assert!(MATRIX.iter().any(|m| m.3) && MATRIX.iter().any(|m| !m.3));
    std::fs::create_dir_all(repo_root().join("target"))?;
    std::fs::write(repo_root().join("target/rbac-matrix.md"), &report)?;

    // Sufficient: the binary, authenticated as that ServiceAccount, does the whole job.
    let sa_api = Api::<ServiceAccount>::namespaced(env.client.clone(), NS);
    let token = sa_api
        .create_token_request(
            "secretbundle-operator",
            &PostParams::default(),
            &TokenRequest::default(),
        )
        .await?
        .status
        .and_then(|s| s.token)
        .unwrap_or_default();
    let kubeconfig = env.cp.token_kubeconfig_path("operator", &token)?;
    let _op = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator.log"),
        &["--leader-election", "--lease-namespace", NS],
    )?;
    env.create_namespace("argocd").await?;
    env.apply_bundle(&simple_bundle("argocd", "argocd", &["argocd-secret"]))
        .await?;
    let es = eso::external_secrets(&env.client, "argocd", EsoVersion::V1);
    wait::until_count(&es, &ListParams::default(), 1).await?;
    eso::set_ready(&es, "argocd-secret", "True", "SecretSynced", "").await?;
    wait::bundle_reason(&env.bundles(), "argocd", "Ready").await?;
    env.bundles().delete("argocd", &Default::default()).await?;
    wait::until_deleted(&env.bundles(), "argocd").await?;
    wait::until_count(&es, &ListParams::default(), 0).await?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() -> anyhow::Result<()> {
    let mut env = Env::start_with_eso_v1().await?;
    env.stop_operator();
    let kubeconfig = env.cp.kubeconfig_path()?;
    let args = ["--leader-election", "--lease-namespace", "default"];
    let mut a = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator-a.log"),
        &[&args[..], &["--identity", "a"]].concat(),
    )?;
    let mut b = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator-b.log"),
        &[&args[..], &["--identity", "b"]].concat(),
    )?;

    let leases = Api::<Lease>::namespaced(env.client.clone(), "default");
    let holder = |l: Option<&Lease>| l.and_then(|l| l.spec.as_ref()?.holder_identity.clone());
    let lease = wait::until(
        &leases,
        "secretbundle-operator",
        "a holder",
        |l: Option<&Lease>| holder(l).is_some(),
    )
    .await?;
    let leader = holder(Some(&lease)).unwrap_or_default();

    env.apply_bundle(&simple_bundle("first", "missing", &["x"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "first", "WaitingForNamespace").await?;
    let (active, standby) = if leader == "a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let series = r#"secretbundle_reconciles_total{reason="WaitingForNamespace"}"#;
    active.await_metric(series, 1.0).await?;
    assert_eq!(standby.metric(series), 0.0, "the standby wrote nothing");
    assert_eq!(
        standby.get("/readyz").map(|r| r.0),
        Some(200),
        "a standby is ready to serve"
    );

    // The leader dies without releasing the lease; the standby takes over once it expires.
    active.proc.kill();
    let standby_id = if leader == "a" { "b" } else { "a" };
    wait::until(
        &leases,
        "secretbundle-operator",
        "the standby holds the lease",
        |l: Option<&Lease>| holder(l).as_deref() == Some(standby_id),
    )
    .await?;
    env.apply_bundle(&simple_bundle("second", "missing", &["x"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "second", "WaitingForNamespace").await?;
    standby.await_metric(series, 1.0).await?;
    Ok(())
}
