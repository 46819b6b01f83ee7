//! The operator's own identity in tests: a ServiceAccount holding exactly the rules the shipped
//! ClusterRole grants, and the apiserver's audit log read back to prove what it did with them.
//!
//! Every [`crate::Env`] runs its operator this way, so every integration test also shows that the
//! shipped RBAC suffices, and checks on teardown that the operator never touched a Secret and
//! wrote nothing outside its own kinds.

use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::json;

use crate::controlplane::{ControlPlane, read_audit_log};
use crate::repo_root;

/// Where the test identity lives: apart from `secretbundle-system`, which tests install into.
pub const NAMESPACE: &str = "secretbundle-test-identity";
pub const SERVICE_ACCOUNT: &str = "secretbundle-operator";
/// The name the audit log records for the operator.
pub const USER: &str = "system:serviceaccount:secretbundle-test-identity:secretbundle-operator";
/// A copy of the shipped rules under another name, so installing the chart does not clash.
pub const ROLE: &str = "secretbundle-operator-under-test";

/// Resources the operator may write (create, update, patch, delete).
const WRITABLE: [&str; 4] = ["secretbundles", "externalsecrets", "events", "leases"];

/// The rules of the shipped ClusterRole (deploy/kustomize/base/rbac.yaml).
pub fn shipped_rules() -> Result<Vec<PolicyRule>> {
    let path = repo_root().join("deploy/kustomize/base/rbac.yaml");
    let text = std::fs::read_to_string(&path)?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole") {
            let role: ClusterRole = serde_yaml::from_value(value)?;
            return Ok(role.rules.unwrap_or_default());
        }
    }
    anyhow::bail!("no ClusterRole in {}", path.display())
}

/// A client acting as the operator's ServiceAccount, bound to the shipped rules.
pub async fn operator_client(cp: &ControlPlane, admin: &Client) -> Result<Client> {
    Ok(Client::try_from(operator_config(cp, admin).await?)?)
}

/// The config of [`operator_client`], to build clients with more layers.
pub async fn operator_config(cp: &ControlPlane, admin: &Client) -> Result<Config> {
    let pp = PatchParams::apply("secretbundle-tests");
    let apply = |v: serde_json::Value| Patch::Apply(v);
    Api::<Namespace>::all(admin.clone())
        .patch(
            NAMESPACE,
            &pp,
            &apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await?;
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE);
    sas.patch(
        SERVICE_ACCOUNT,
        &pp,
        &apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}})),
    )
    .await?;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": ROLE}, "rules": shipped_rules()?});
    Api::<ClusterRole>::all(admin.clone())
        .patch(ROLE, &pp, &apply(role))
        .await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE}});
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(ROLE, &pp, &apply(binding))
        .await?;
    let token = service_account_token(admin, NAMESPACE, SERVICE_ACCOUNT).await?;
    let path = cp.token_kubeconfig_path("operator", &token)?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// A token for ServiceAccount `ns/name`, issued by TokenRequest (as the kubelet would mount it).
pub async fn service_account_token(admin: &Client, ns: &str, name: &str) -> Result<String> {
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await?
        .status
        .and_then(|s| s.token)
        .with_context(|| format!("TokenRequest for {ns}/{name} returned no token"))
}

/// Everything the operator did that it must never do, from the apiserver's audit log: any
/// request about Secrets, and any write outside its own kinds. Empty when all is well.
pub fn audit_violations(audit_log: &Path) -> Result<Vec<String>> {
    audit_violations_of(audit_log, USER)
}

/// [`audit_violations`] of the user `user` (e.g. the chart's ServiceAccount).
pub fn audit_violations_of(audit_log: &Path, user: &str) -> Result<Vec<String>> {
    let text = read_audit_log(audit_log, 0)?;
    let mut found = std::collections::BTreeSet::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
        if s("/user/username") != user {
            continue;
        }
        let (verb, resource) = (s("/verb"), s("/objectRef/resource"));
        let read = matches!(verb, "get" | "list" | "watch");
        if resource == "secrets" || (!read && !WRITABLE.contains(&resource)) {
            found.insert(format!("{verb} {resource} {}", s("/requestURI")));
        }
    }
    Ok(found.into_iter().collect())
}

/// A request of one user that the apiserver carried out, from its audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub verb: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// The Pod the user's token is bound to (`authentication.kubernetes.io/pod-name`), if any.
    pub pod: Option<String>,
}

/// The writes (not get, list, watch) of `user` that succeeded, in the order they completed.
pub fn audit_writes_of(audit_log: &Path, user: &str) -> Result<Vec<Write>> {
    let text = read_audit_log(audit_log, 0)?;
    let mut writes = Vec::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
        let code = e.pointer("/responseStatus/code").and_then(|c| c.as_i64());
        let verb = s("/verb");
        if s("/user/username") != user
            || s("/stage") != "ResponseComplete"
            || !code.is_some_and(|c| (200..300).contains(&c))
            || matches!(verb, "get" | "list" | "watch")
        {
            continue;
        }
        let sub = s("/objectRef/subresource");
        let resource = s("/objectRef/resource");
        writes.push(Write {
            verb: verb.into(),
            resource: if sub.is_empty() {
                resource.into()
            } else {
                format!("{resource}/{sub}")
            },
            namespace: s("/objectRef/namespace").into(),
            name: s("/objectRef/name").into(),
            pod: e
                .pointer("/user/extra/authentication.kubernetes.io~1pod-name/0")
                .and_then(|v| v.as_str())
                .map(String::from),
        });
    }
    Ok(writes)
}
