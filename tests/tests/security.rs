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
    let text = std::fs::read_to_string(cp.audit_log())?;
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
    let cp = ControlPlane::start_with(Options { audit: true }).await?;
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
