//! Security, from the API server's side. Every test's `Env` runs the operator as its own
//! ServiceAccount with the shipped RBAC and audits it on teardown; these tests make the claim
//! explicit on the full path (real ESO writing real Secrets) and show the audit check is not
//! vacuous: a Secret read the RBAC denies is still caught.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use secretbundle_tests::controlplane::{ControlPlane, Options};
use secretbundle_tests::identity::{self, USER};
use secretbundle_tests::stack::{self, Stack, VAULT_STORE};
use secretbundle_tests::{bundle, wait};

/// How many requests the audit log has from the operator.
fn operator_requests(cp: &ControlPlane) -> anyhow::Result<usize> {
    let text = secretbundle_tests::controlplane::read_audit_log(&cp.audit_log(), 0)?;
    Ok(text.lines().filter(|l| l.contains(USER)).count())
}

#[tokio::test]
async fn the_operator_never_reads_a_secret_on_the_full_path() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("platform/db", &[("password", "pw")])?;
    s.env.create_namespace("platform").await?;
    s.env
        .apply_bundle(&bundle(&format!(
            "metadata: {{name: platform}}\nspec: {{targetNamespace: platform, secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: db, data: [{{secretKey: password, remoteRef: {{key: platform/db, property: password}}}}]}}]}}"
        )))
        .await?;
    wait::bundle_reason(&s.env.bundles(), "platform", "Ready").await?;
    // ESO wrote the Secret; the operator delivered it without seeing it.
    let data = stack::secret_data(&s.env.client, "platform", "db").await?;
    assert_eq!(
        data.and_then(|d| d.get("password").cloned()).as_deref(),
        Some("pw")
    );
    assert!(
        operator_requests(&s.env.cp)? > 10,
        "the audit log records the operator's requests"
    );
    let violations = identity::audit_violations(&s.env.cp.audit_log())?;
    assert!(violations.is_empty(), "{violations:#?}");
    Ok(())
}

#[tokio::test]
async fn the_audit_check_catches_a_denied_secret_read() -> anyhow::Result<()> {
    let cp = ControlPlane::start_with(Options::audited()).await?;
    let admin = cp.client().await?;
    let operator = identity::operator_client(&cp, &admin).await?;
    let _ = Api::<Secret>::all(operator)
        .list(&ListParams::default())
        .await;
    let violations = identity::audit_violations(&cp.audit_log())?;
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].starts_with("list secrets"), "{violations:#?}");
    Ok(())
}

/// Renders the chart with `helm template` and returns its documents.
fn render_chart(set: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let tools = secretbundle_tests::controlplane::built("hack/tools.sh")?;
    let chart = secretbundle_tests::repo_root().join("deploy/helm/secretbundle-operator");
    let out = std::process::Command::new(tools.join("helm"))
        .args([
            "template",
            "sb",
            "--namespace",
            "secretbundle-system",
            "--set",
            set,
        ])
        .arg(&chart)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

#[tokio::test]
async fn the_chart_runs_locked_down_and_offers_a_pdb_and_network_policy() -> anyhow::Result<()> {
    let kinds = |docs: &[serde_json::Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let plain = render_chart("replicas=1")?;
    assert!(
        !kinds(&plain)
            .iter()
            .any(|k| k == "PodDisruptionBudget" || k == "NetworkPolicy"),
        "both are opt-in: {:?}",
        kinds(&plain)
    );
    let docs =
        render_chart("replicas=2,podDisruptionBudget.enabled=true,networkPolicy.enabled=true")?;
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .ok_or_else(|| anyhow::anyhow!("no Deployment"))?;
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0]["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    for kind in ["PodDisruptionBudget", "NetworkPolicy"] {
        assert!(kinds(&docs).iter().any(|k| k == kind), "{kind} rendered");
    }
    // The API server accepts what the chart renders (server-side dry run).
    let cp = ControlPlane::start().await?;
    let file = tempfile::NamedTempFile::new()?;
    let objects: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .cloned()
        .collect();
    std::fs::write(
        file.path(),
        serde_json::to_string(
            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}),
        )?,
    )?;
    let out = secretbundle_tests::kubectl_with(
        &cp.kubeconfig_path()?,
        &["create", "namespace", "secretbundle-system"],
    )?;
    anyhow::ensure!(out.status.success(), "{out:?}");
    let out = secretbundle_tests::kubectl_with(
        &cp.kubeconfig_path()?,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &file.path().to_string_lossy(),
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("poddisruptionbudget.policy/sb-secretbundle-operator serverside-applied"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "networkpolicy.networking.k8s.io/sb-secretbundle-operator serverside-applied"
        ),
        "{stdout}"
    );
    Ok(())
}
