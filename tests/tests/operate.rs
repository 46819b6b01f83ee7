//! Operating the real binary: least-privilege RBAC proven with `kubectl auth can-i` and by
//! running the operator as its ServiceAccount; leader election across processes, with handovers
//! on a crash, on SIGTERM and on a freeze, the last checked from the apiserver's audit log.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::fmt::Write as _;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt as _};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::controlplane::Options;
use secretbundle_tests::process::Operator;
use secretbundle_tests::{
    ControlPlane, Env, apply_crds, eso, kubectl_with, repo_root, simple_bundle, wait,
};
use serde_json::json;

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
    let token = token(&env.client, "secretbundle-operator").await?;
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
    let a = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator-a.log"),
        &[&args[..], &["--identity", "a"]].concat(),
    )?;
    let b = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator-b.log"),
        &[&args[..], &["--identity", "b"]].concat(),
    )?;

    let leases = Api::<Lease>::namespaced(env.client.clone(), "default");
    let lease = wait::until(&leases, LEASE, "a holder", |l: Option<&Lease>| {
        holder(l).is_some()
    })
    .await?;
    let leader = holder(Some(&lease)).unwrap_or_default();

    env.apply_bundle(&simple_bundle("first", "missing", &["x"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "first", "WaitingForNamespace").await?;
    let (mut active, mut standby) = if leader == "a" { (a, b) } else { (b, a) };
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
        LEASE,
        "the standby holds the lease",
        |l: Option<&Lease>| holder(l).as_deref() == Some(standby_id),
    )
    .await?;
    env.apply_bundle(&simple_bundle("second", "missing", &["x"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "second", "WaitingForNamespace").await?;
    standby.await_metric(series, 1.0).await?;

    // A graceful stop hands over at once: on SIGTERM the leader finishes its work and clears
    // the Lease's holder, and a new standby takes it without waiting for it to expire.
    let c = Operator::start(
        &kubeconfig,
        &env.cp.dir().join("operator-c.log"),
        &[&args[..], &["--identity", "c"]].concat(),
    )?;
    await_ready(&c).await?;
    let last = leases.get(LEASE).await?;
    let expiry = expiry(&last).context("the leader's Lease has no renewTime")?;
    let stopped = Instant::now();
    signal(&standby, "TERM")?;
    let taken = wait::until(
        &leases,
        LEASE,
        "the new standby holds the lease",
        |l: Option<&Lease>| holder(l).as_deref() == Some("c"),
    )
    .await?;
    let handover = stopped.elapsed();
    let acquired = taken
        .spec
        .and_then(|s| s.acquire_time)
        .context("no acquireTime")?
        .0;
    eprintln!("SIGTERM handover: the new standby held the Lease {handover:?} after the signal");
    assert!(
        acquired < expiry,
        "taken at {acquired}, not before the released Lease would have expired ({expiry})"
    );
    let status = exited(&mut standby).await?;
    assert!(
        status.success(),
        "a SIGTERMed leader exits cleanly: {status}"
    );
    env.apply_bundle(&simple_bundle("third", "missing", &["x"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "third", "WaitingForNamespace").await?;
    c.await_metric(series, 1.0).await?;
    Ok(())
}

/// The leader is frozen (SIGSTOP) past its lease, the standby takes over, and the old leader is
/// woken. Each runs as its own ServiceAccount, and the apiserver's audit log shows that the old
/// leader sends no write at all once it runs again, and that the two never wrote at the same time.
#[tokio::test]
async fn a_frozen_leader_writes_nothing_after_the_standby_took_over() -> anyhow::Result<()> {
    let cp = ControlPlane::start_with(Options::audited()).await?;
    let client = cp.client().await?;
    apply_crds(&client, vec![SecretBundle::crd()]).await?;
    apply_crds(&client, eso::crds("v2.9.0")?).await?;
    let base = repo_root().join("deploy/kustomize/base");
    let out = kubectl_with(
        &cp.kubeconfig_path()?,
        &["apply", "--server-side", "-k", &base.to_string_lossy()],
    )?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ops = Vec::new();
    for id in ["a", "b"] {
        let sa = format!("operator-{id}");
        grant_operator_role(&client, &sa).await?;
        let kubeconfig = cp.token_kubeconfig_path(&sa, &token(&client, &sa).await?)?;
        let log = cp.dir().join(format!("operator-{id}.log"));
        let args = [
            "--leader-election",
            "--lease-namespace",
            NS,
            "--identity",
            id,
        ];
        ops.push(Operator::start(&kubeconfig, &log, &args)?);
    }
    let user = |i: usize| format!("system:serviceaccount:{NS}:operator-{}", ["a", "b"][i]);
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    let bundles = Api::<SecretBundle>::all(client.clone());
    let lease = wait::until(&leases, LEASE, "a holder", |l: Option<&Lease>| {
        holder(l).is_some()
    })
    .await?;
    let (old, new) = if holder(Some(&lease)).as_deref() == Some("a") {
        (0, 1)
    } else {
        (1, 0)
    };
    let new_id = ["a", "b"][new];
    let series = r#"secretbundle_reconciles_total{reason="WaitingForNamespace"}"#;
    apply(&bundles, "before").await?;
    ops[old].await_metric(series, 1.0).await?;

    // Frozen just after a renewal, so no request of its own is half sent.
    let renewed = leases.get(LEASE).await?.spec.and_then(|s| s.renew_time);
    wait::until(&leases, LEASE, "a renewal", move |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref()?.renew_time.clone()) != renewed
    })
    .await?;
    signal(&ops[old], "STOP")?;
    let frozen = Instant::now();
    wait::until(
        &leases,
        LEASE,
        "the standby holds the lease",
        |l: Option<&Lease>| holder(l).as_deref() == Some(new_id),
    )
    .await?;
    let takeover = frozen.elapsed();
    // The frozen leader's fence shut 10 s after its last renewal; the standby may not come sooner.
    assert!(
        takeover > Duration::from_secs(10),
        "took over {takeover:?} after the freeze"
    );
    apply(&bundles, "during").await?;

    let resumed = Timestamp::now();
    signal(&ops[old], "CONT")?;
    // Work for the woken leader to be tempted by; the new leader does it.
    apply(&bundles, "after").await?;
    let status = exited(&mut ops[old]).await?;
    assert!(
        !status.success(),
        "the old leader exits for lost leadership: {status}"
    );
    // Anything the old process sent before it exited has reached the apiserver by now.
    apply(&bundles, "last").await?;
    ops[new].await_metric(series, 4.0).await?;

    let events = audit_writes(&cp)?;
    let by = |i: usize, lease: bool| -> Vec<&Write> {
        events
            .iter()
            .filter(|w| w.user == user(i) && (w.resource == "leases") == lease)
            .collect()
    };
    let late: Vec<_> = events
        .iter()
        .filter(|w| w.user == user(old) && w.at >= resumed)
        .collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after SIGCONT: {late:#?}"
    );
    let (old_writes, new_writes) = (by(old, false), by(new, false));
    assert!(
        !old_writes.is_empty() && !new_writes.is_empty(),
        "{events:#?}"
    );
    let old_last = old_writes.iter().map(|w| w.at).max().context("no writes")?;
    let new_first = new_writes.iter().map(|w| w.at).min().context("no writes")?;
    assert!(
        old_last < new_first,
        "both wrote at once: {old_last} >= {new_first}"
    );
    eprintln!(
        "audit: {} writes in all; old leader: {} object + {} Lease writes, last {old_last}; \
         standby took over {takeover:?} after the freeze; SIGCONT at {resumed}; \
         new leader: {} object + {} Lease writes, first object write {new_first}; \
         old leader writes after SIGCONT: {}",
        events.len(),
        old_writes.len(),
        by(old, true).len(),
        new_writes.len(),
        by(new, true).len(),
        late.len(),
    );
    eprintln!("old leader's object writes: {old_writes:#?}");
    Ok(())
}

const LEASE: &str = "secretbundle-operator";

fn holder(l: Option<&Lease>) -> Option<String> {
    l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
}

/// When a Lease expires by its own record: renewTime plus leaseDurationSeconds.
fn expiry(l: &Lease) -> Option<Timestamp> {
    let spec = l.spec.as_ref()?;
    let seconds = i64::from(spec.lease_duration_seconds?);
    spec.renew_time
        .as_ref()?
        .0
        .checked_add(Duration::from_secs(seconds.try_into().ok()?))
        .ok()
}

/// A ServiceAccount token from the TokenRequest API.
async fn token(client: &Client, sa: &str) -> anyhow::Result<String> {
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create_token_request(sa, &PostParams::default(), &TokenRequest::default())
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token")
}

/// A ServiceAccount bound to the shipped ClusterRole and leader-election Role.
async fn grant_operator_role(client: &Client, sa: &str) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let subject = json!([{"kind": "ServiceAccount", "name": sa, "namespace": NS}]);
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": sa}}))?,
        )
        .await?;
    let crb = json!({"metadata": {"name": sa}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secretbundle-operator"}});
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &serde_json::from_value(crb)?)
        .await?;
    let rb = json!({"metadata": {"name": sa}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secretbundle-operator-leader-election"}});
    Api::<RoleBinding>::namespaced(client.clone(), NS)
        .create(&pp, &serde_json::from_value(rb)?)
        .await?;
    Ok(())
}

/// Applies a bundle waiting for a missing namespace and waits until the leader has said so.
async fn apply(bundles: &Api<SecretBundle>, name: &str) -> anyhow::Result<()> {
    let bundle = simple_bundle(name, "missing", &["x"]);
    let pp = PatchParams::apply("secretbundle-tests").force();
    bundles.patch(name, &pp, &Patch::Apply(&bundle)).await?;
    wait::bundle_reason(bundles, name, "WaitingForNamespace").await?;
    Ok(())
}

/// Sends a signal with kill(1) (the workspace forbids unsafe code).
fn signal(op: &Operator, sig: &str) -> anyhow::Result<()> {
    let pid = op.proc.id().context("the operator is not running")?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{sig} {pid}: {status}");
    Ok(())
}

async fn await_ready(op: &Operator) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait::TIMEOUT;
    while op.get("/readyz").map(|r| r.0) != Some(200) {
        ensure!(Instant::now() < deadline, "operator not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn exited(op: &mut Operator) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + wait::TIMEOUT;
    loop {
        if let Some(status) = op.proc.exited() {
            return Ok(status);
        }
        ensure!(
            Instant::now() < deadline,
            "still running after {:?}",
            wait::TIMEOUT
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request that could change something, as the apiserver's audit log recorded it.
struct Write {
    user: String,
    verb: String,
    resource: String,
    name: String,
    code: Option<i64>,
    /// When the apiserver received it.
    at: Timestamp,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.code.map_or("-".into(), |c| c.to_string());
        let (user, verb, resource, name) = (&self.user, &self.verb, &self.resource, &self.name);
        write!(f, "{} {user} {verb} {resource}/{name} -> {code}", self.at)
    }
}

/// Every request but get, list and watch, once each: the log has an event per stage, the first
/// written when the request arrives, so even a request still being served is counted.
fn audit_writes(cp: &ControlPlane) -> anyhow::Result<Vec<Write>> {
    let text = secretbundle_tests::controlplane::read_audit_log(&cp.audit_log(), 0)?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let s = |path: &str| {
            e.pointer(path)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let verb = s("/verb");
        if matches!(verb.as_str(), "get" | "list" | "watch") {
            continue;
        }
        out.insert(
            s("/auditID"),
            Write {
                user: s("/user/username"),
                verb,
                resource: s("/objectRef/resource"),
                name: s("/objectRef/name"),
                code: e.pointer("/responseStatus/code").and_then(|v| v.as_i64()),
                at: s("/requestReceivedTimestamp").parse()?,
            },
        );
    }
    Ok(out.into_values().collect())
}
