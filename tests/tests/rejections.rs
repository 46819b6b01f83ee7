//! An apply the cluster rejects reaches the bundle's status in the API server's own words, is
//! retried with backoff, and converges by itself once the cause goes away. The rejection comes
//! from a ValidatingAdmissionPolicy, which kube-apiserver evaluates itself.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::{Env, eso, simple_bundle, wait};
use serde_json::json;

const NS: &str = "neo4j";
const DENIED: &str = "ExternalSecrets named neo4j-admin need a security review";

/// Denies creating or updating the ExternalSecret named `neo4j-admin`.
async fn deny_one_child(env: &Env) -> anyhow::Result<()> {
    let pp = PatchParams::apply("platform-security");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "review-neo4j-admin"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["external-secrets.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["externalsecrets"]}]},
            "validations": [{"expression": "object.metadata.name != 'neo4j-admin'", "message": DENIED}]
        }
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "review-neo4j-admin"},
        "spec": {"policyName": "review-neo4j-admin", "validationActions": ["Deny"]}
    });
    Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
        .patch("review-neo4j-admin", &pp, &Patch::Apply(&policy))
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .patch("review-neo4j-admin", &pp, &Patch::Apply(&binding))
        .await?;
    await_denial(env).await
}

/// The API server loads policies asynchronously and publishes no event when one takes effect:
/// probe with server-side dry-run creates until one is denied (bounded by the test deadline).
async fn await_denial(env: &Env) -> anyhow::Result<()> {
    let es = eso::external_secrets(&env.client, NS, EsoVersion::V1);
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "neo4j-admin", "namespace": NS},
        "spec": {"secretStoreRef": {"name": eso::TEST_STORE, "kind": "ClusterSecretStore"},
                 "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]}
    }))?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + wait::TIMEOUT;
    loop {
        match es.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains(DENIED) => return Ok(()),
            other => anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "policy never took effect: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rejected_child_is_reported_in_the_apiservers_words_and_recovers() -> anyhow::Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace(NS).await?;
    deny_one_child(&env).await?;
    let applied = env
        .apply_bundle(&simple_bundle("neo4j", NS, &["neo4j-auth", "neo4j-admin"]))
        .await?;

    let b = wait::bundle_message(&env.bundles(), "neo4j", "ApplyFailed", DENIED).await?;
    let status = b.status.expect("status");
    let ready = &status.conditions[0];
    assert_eq!(ready.observed_generation, applied.metadata.generation);
    assert!(
        ready
            .message
            .starts_with("ExternalSecret neo4j/neo4j-admin: "),
        "names the child: {}",
        ready.message
    );
    assert!(
        wait::condition_true(&status, "Stalled"),
        "a rejection is something wrong, not something to wait for: {:?}",
        status.conditions
    );
    let admin = status
        .secrets
        .iter()
        .find(|s| s.name == "neo4j-admin")
        .expect("entry");
    assert_eq!(admin.reason, "ApplyFailed");
    assert!(admin.message.contains(DENIED), "{}", admin.message);
    // The other child is not held back by its sibling.
    let es = eso::external_secrets(&env.client, NS, EsoVersion::V1);
    let children = wait::until_count(&es, &ListParams::default(), 1).await?;
    assert_eq!(children[0].metadata.name.as_deref(), Some("neo4j-auth"));

    // The cause goes away; the retry (backoff, no watch event involved) applies the child.
    Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .delete("review-neo4j-admin", &DeleteParams::default())
        .await?;
    wait::until_count(&es, &ListParams::default(), 2).await?;
    wait::bundle_reason(&env.bundles(), "neo4j", "SecretsNotReady").await?;
    Ok(())
}
