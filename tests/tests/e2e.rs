//! End to end with the real External Secrets Operator (v0.16.2, built from its Go module) and
//! a real Vault-API server (OpenBao): values travel from OpenBao to Kubernetes Secrets.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use secretbundle_api::{MANAGER, SecretBundle};
use secretbundle_tests::stack::{self, Stack, VAULT_STORE};
use secretbundle_tests::{bundle, wait};

fn argocd_bundle() -> SecretBundle {
    bundle(&format!(
        r#"
apiVersion: secrets.ameide.io/v1alpha1
kind: SecretBundle
metadata: {{name: argocd}}
spec:
  targetNamespace: argocd
  secretStoreRef: {{name: {VAULT_STORE}}}
  secrets:
    - name: argocd-secret
      data:
        - secretKey: admin.password
          remoteRef: {{key: argocd/admin, property: password}}
        - secretKey: server.secretkey
          remoteRef: {{key: argocd/server, property: secretkey}}
    - name: argocd-repo-creds
      type: kubernetes.io/basic-auth
      labels: {{argocd.argoproj.io/secret-type: repo-creds}}
      dataFrom:
        - extract: {{key: argocd/repo}}
"#
    ))
}

async fn secret(
    s: &Stack,
    ns: &str,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    Ok(stack::secret_data(&s.env.client, ns, name)
        .await?
        .unwrap_or_default())
}

#[tokio::test]
async fn values_flow_from_openbao_to_secrets_and_rotate_on_refresh() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("argocd/admin", &[("password", "s3cret")])?;
    s.bao.put("argocd/server", &[("secretkey", "k1")])?;
    s.bao
        .put("argocd/repo", &[("username", "git"), ("password", "pat-1")])?;
    s.env.create_namespace("argocd").await?;
    s.env.apply_bundle(&argocd_bundle()).await?;

    let b = wait::bundle_reason(&s.env.bundles(), "argocd", "Ready").await?;
    let status = b.status.expect("status");
    assert_eq!((status.ready_secrets, status.total_secrets), (2, 2));
    assert_eq!(
        secret(&s, "argocd", "argocd-secret").await?,
        [
            ("admin.password".into(), "s3cret".into()),
            ("server.secretkey".into(), "k1".into())
        ]
        .into()
    );
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "argocd");
    let repo = secrets.get("argocd-repo-creds").await?;
    assert_eq!(repo.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(
        repo.labels()
            .get("argocd.argoproj.io/secret-type")
            .map(String::as_str),
        Some("repo-creds")
    );
    assert_eq!(
        secret(&s, "argocd", "argocd-repo-creds").await?,
        [
            ("password".into(), "pat-1".into()),
            ("username".into(), "git".into())
        ]
        .into()
    );

    // Rotation: a new value in OpenBao, one annotation on the bundle, the Secret follows.
    s.bao.put("argocd/admin", &[("password", "rotated")])?;
    s.env.kubectl(&[
        "annotate",
        "sb",
        "argocd",
        "secrets.ameide.io/refresh-requested-at=r1",
    ])?;
    wait::until(
        &s.env.bundles(),
        "argocd",
        "refresh r1 handled",
        |b: Option<&SecretBundle>| {
            b.and_then(|b| b.status.as_ref()?.last_handled_refresh.clone())
                .as_deref()
                == Some("r1")
        },
    )
    .await?;
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "argocd");
    wait::until(
        &secrets,
        "argocd-secret",
        "rotated value",
        |sec: Option<&Secret>| {
            sec.and_then(|s| {
                s.data
                    .as_ref()?
                    .get("admin.password")
                    .map(|v| v.0 == b"rotated")
            })
            .unwrap_or(false)
        },
    )
    .await?;
    wait::bundle_reason(&s.env.bundles(), "argocd", "Ready").await?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_key_fails_loudly_and_a_fix_plus_refresh_recovers() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("argocd/admin", &[("password", "s3cret")])?;
    s.bao.put("argocd/repo", &[("username", "git")])?;
    // argocd/server is missing from OpenBao.
    s.env.create_namespace("argocd").await?;
    s.env.apply_bundle(&argocd_bundle()).await?;
    let b = wait::bundle_message(
        &s.env.bundles(),
        "argocd",
        "SecretSyncFailed",
        // The other secret syncs independently: wait for it too.
        "1/2 secrets ready; argocd-secret is SecretSyncedError",
    )
    .await?;
    let status = b.status.expect("status");
    assert!(
        wait::condition_true(&status, "Stalled"),
        "a failing sync is unhealthy, not in progress: {:?}",
        status.conditions
    );
    let failing = status
        .secrets
        .iter()
        .find(|x| x.name == "argocd-secret")
        .expect("entry");
    assert!(!failing.ready);
    assert!(
        status.conditions[0]
            .message
            .starts_with("1/2 secrets ready; argocd-secret is SecretSyncedError"),
        "{:?}",
        status.conditions
    );

    s.bao.put("argocd/server", &[("secretkey", "k1")])?;
    s.env.kubectl(&[
        "annotate",
        "sb",
        "argocd",
        "secrets.ameide.io/refresh-requested-at=fixed",
    ])?;
    wait::bundle_reason(&s.env.bundles(), "argocd", "Ready").await?;
    assert_eq!(
        secret(&s, "argocd", "argocd-secret")
            .await?
            .get("server.secretkey")
            .map(String::as_str),
        Some("k1")
    );
    Ok(())
}

#[tokio::test]
async fn refresh_interval_zero_is_reported_not_pretended() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("neo4j/auth", &[("password", "p1")])?;
    s.env.create_namespace("neo4j").await?;
    let neo4j = bundle(&format!(
        "metadata: {{name: neo4j}}\nspec: {{targetNamespace: neo4j, refreshInterval: \"0s\", secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: neo4j-auth, dataFrom: [{{extract: {{key: neo4j/auth}}}}]}}]}}"
    ));
    s.env.apply_bundle(&neo4j).await?;
    wait::bundle_reason(&s.env.bundles(), "neo4j", "Ready").await?;
    s.env.kubectl(&[
        "annotate",
        "sb",
        "neo4j",
        "secrets.ameide.io/refresh-requested-at=r1",
    ])?;
    wait::bundle_message(
        &s.env.bundles(),
        "neo4j",
        "Ready",
        "refresh request not honoured by ESO for neo4j-auth (refreshInterval is zero)",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn out_of_order_arrival_converges_without_a_manual_step() -> anyhow::Result<()> {
    // Bundles first, then namespaces, then ESO CRDs, then the store, then the ESO controller.
    let env = secretbundle_tests::Env::start().await?;
    let data_plane = bundle(&format!(
        "metadata: {{name: data-plane}}\nspec: {{targetNamespace: ameide, dependsOn: [platform], secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: graph-db-credentials, dataFrom: [{{extract: {{key: graph/db}}}}]}}]}}"
    ));
    let platform = bundle(&format!(
        "metadata: {{name: platform}}\nspec: {{targetNamespace: ameide, secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: platform-db-credentials, dataFrom: [{{extract: {{key: platform/db}}}}]}}]}}"
    ));
    env.apply_bundle(&data_plane).await?;
    env.apply_bundle(&platform).await?;
    wait::bundle_reason(&env.bundles(), "platform", "WaitingForNamespace").await?;
    env.create_namespace("ameide").await?;
    wait::bundle_reason(&env.bundles(), "platform", "WaitingForCRD").await?;
    stack::install_eso_v0_16(&env.client).await?;
    wait::bundle_reason(&env.bundles(), "platform", "WaitingForStore").await?;
    wait::bundle_reason(&env.bundles(), "data-plane", "WaitingForDependency").await?;
    let bao = stack::OpenBao::start(env.cp.dir()).await?;
    bao.put("platform/db", &[("username", "app"), ("password", "pw")])?;
    bao.put("graph/db", &[("url", "postgres://graph")])?;
    stack::create_vault_store(&env.client, &bao).await?;
    let _eso = stack::start_eso(&env.cp.kubeconfig_path()?, env.cp.dir())?;

    wait::bundle_reason(&env.bundles(), "platform", "Ready").await?;
    wait::bundle_reason(&env.bundles(), "data-plane", "Ready").await?;
    let graph = stack::secret_data(&env.client, "ameide", "graph-db-credentials")
        .await?
        .unwrap_or_default();
    assert_eq!(
        graph.get("url").map(String::as_str),
        Some("postgres://graph")
    );
    let es = secretbundle_tests::eso::external_secrets(
        &env.client,
        "ameide",
        secretbundle_controller::eso::EsoVersion::V1,
    );
    assert_eq!(es.list(&ListParams::default()).await?.items.len(), 2);
    Ok(())
}

#[tokio::test]
async fn adoption_takes_over_a_helm_made_externalsecret_without_the_secret_disappearing()
-> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("neo4j/auth", &[("password", "p1")])?;
    s.env.create_namespace("neo4j").await?;
    // What the Helmfile layer shipped: an ExternalSecret owned by Helm, synced by ESO.
    let helm_made = serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "neo4j-auth", "namespace": "neo4j",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "vault-secrets-neo4j"}},
        "spec": {"secretStoreRef": {"name": VAULT_STORE, "kind": "ClusterSecretStore"}, "refreshInterval": "1h",
                 "target": {"name": "neo4j-auth"}, "dataFrom": [{"extract": {"key": "neo4j/auth"}}]}
    });
    let es = secretbundle_tests::eso::external_secrets(
        &s.env.client,
        "neo4j",
        secretbundle_controller::eso::EsoVersion::V1,
    );
    es.patch(
        "neo4j-auth",
        &kube::api::PatchParams::apply("helm"),
        &kube::api::Patch::Apply(&helm_made),
    )
    .await?;
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "neo4j");
    let before = wait::until(
        &secrets,
        "neo4j-auth",
        "synced by ESO",
        |x: Option<&Secret>| x.is_some(),
    )
    .await?;

    let yaml = format!(
        "metadata: {{name: neo4j}}\nspec: {{targetNamespace: neo4j, adoptionPolicy: IfExists, secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: neo4j-auth, dataFrom: [{{extract: {{key: neo4j/auth}}}}]}}]}}"
    );
    s.env.apply_bundle(&bundle(&yaml)).await?;
    wait::bundle_reason(&s.env.bundles(), "neo4j", "Ready").await?;
    let adopted = es.get("neo4j-auth").await?;
    assert_eq!(
        adopted
            .labels()
            .get("secrets.ameide.io/bundle")
            .map(String::as_str),
        Some("neo4j")
    );
    let handed = wait::until(
        &es,
        "neo4j-auth",
        "handed over",
        |o: Option<&DynamicObject>| {
            o.is_some_and(|o| secretbundle_tests::eso::main_managers(o) == [MANAGER])
        },
    )
    .await?;
    assert_eq!(handed.uid(), adopted.uid());
    let after = secrets.get("neo4j-auth").await?;
    assert_eq!(after.uid(), before.uid(), "the Secret was never replaced");
    assert_eq!(
        secret(&s, "neo4j", "neo4j-auth")
            .await?
            .get("password")
            .map(String::as_str),
        Some("p1")
    );
    Ok(())
}

#[tokio::test]
async fn store_gate_follows_what_eso_reports_about_the_store() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao
        .put("cert-manager/azure-dns", &[("client-secret", "c1")])?;
    s.env.create_namespace("cert-manager").await?;
    // A store whose token is wrong: ESO itself marks it not Ready.
    let store = |name: &str, token_secret: &str, conditions: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": name},
            "spec": {"conditions": conditions, "provider": {"vault": {
                "server": s.bao.addr, "path": "secret", "version": "v2",
                "auth": {"tokenSecretRef": {"name": token_secret, "key": "token", "namespace": "external-secrets"}}}}}
        })
    };
    let wrong: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "wrong-token", "namespace": "external-secrets"}, "stringData": {"token": "not-a-token"}
    }))?;
    Api::<Secret>::namespaced(s.env.client.clone(), "external-secrets")
        .create(&Default::default(), &wrong)
        .await?;
    let stores: Api<kube::api::DynamicObject> = Api::all_with(
        s.env.client.clone(),
        &secretbundle_controller::eso::EsoKind::ClusterSecretStore
            .api_resource(secretbundle_controller::eso::EsoVersion::V1),
    );
    let pp = kube::api::PatchParams::apply("platform-team").force();
    stores
        .patch(
            "azure",
            &pp,
            &kube::api::Patch::Apply(store("azure", "wrong-token", serde_json::json!([]))),
        )
        .await?;

    let yaml = "metadata: {name: cert-manager}\nspec: {targetNamespace: cert-manager, secretStoreRef: {name: azure}, secrets: [{name: azure-dns, data: [{secretKey: client-secret, remoteRef: {key: cert-manager/azure-dns, property: client-secret}}]}]}";
    s.env.apply_bundle(&bundle(yaml)).await?;
    let b = wait::bundle_message(
        &s.env.bundles(),
        "cert-manager",
        "StoreNotReady",
        r#"ClusterSecretStore "azure" is not Ready"#,
    )
    .await?;
    let es = secretbundle_tests::eso::external_secrets(
        &s.env.client,
        "cert-manager",
        secretbundle_controller::eso::EsoVersion::V1,
    );
    assert!(
        es.list(&ListParams::default()).await?.items.is_empty(),
        "nothing applied: {:?}",
        b.status
    );

    // Fixed, but admitting only other namespaces: Stalled.
    let only_argocd = serde_json::json!([{"namespaces": ["argocd"]}]);
    stores
        .patch(
            "azure",
            &pp,
            &kube::api::Patch::Apply(store("azure", "vault-token", only_argocd)),
        )
        .await?;
    wait::bundle_reason(&s.env.bundles(), "cert-manager", "StoreNotAllowed").await?;

    // Admitting it: the value arrives.
    let by_regex = serde_json::json!([{"namespaceRegexes": ["^cert-"]}]);
    stores
        .patch(
            "azure",
            &pp,
            &kube::api::Patch::Apply(store("azure", "vault-token", by_regex)),
        )
        .await?;
    wait::bundle_reason(&s.env.bundles(), "cert-manager", "Ready").await?;
    assert_eq!(
        secret(&s, "cert-manager", "azure-dns")
            .await?
            .get("client-secret")
            .map(String::as_str),
        Some("c1")
    );
    Ok(())
}
