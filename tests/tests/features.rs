//! The seed's real credentials, end to end with the real ESO controller (v0.16.2, built from its
//! Go module) and OpenBao: composed values with their exact bytes, Merge into a Secret someone
//! else owns, what keeps a Secret (Retain, Orphan) and what does not, generated credentials with
//! no store key, and a field newer than the installed ESO refused until ESO is upgraded.
//!
//! Only v0.16.2's controller is built, so what needs a newer ESO (the generator kinds v2.9.0 adds)
//! is tested at the schema level: dry-run against v2.9.0's CRDs in `eso_schemas.rs`.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::eso::external_secrets;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::stack::{self, Stack, VAULT_STORE};
use secretbundle_tests::{Env, bundle, repo_root, wait};
use serde_json::json;

fn example(path: &str) -> Result<SecretBundle> {
    let file = repo_root().join("examples").join(path);
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    Ok(serde_yaml::from_str(&text)?)
}

/// One bundle of the local overlay, as kustomize builds it.
fn local_overlay(env: &Env, name: &str) -> Result<SecretBundle> {
    let dir = repo_root().join("examples/overlays/local");
    let out = env.kubectl(&["kustomize", &dir.to_string_lossy()])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let b: SecretBundle = serde::Deserialize::deserialize(doc)?;
        if b.name_any() == name {
            return Ok(b);
        }
    }
    bail!("no bundle {name} in the local overlay")
}

fn kubectl_ok(env: &Env, args: &[&str]) -> Result<String> {
    let out = env.kubectl(args)?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ClusterGenerator the local overlay uses, as the example ships it.
fn apply_local_generator(env: &Env) -> Result<()> {
    let file = repo_root().join("examples/store/local-password-generator.yaml");
    kubectl_ok(
        env,
        &["apply", "--server-side", "-f", &file.to_string_lossy()],
    )
    .map(drop)
}

fn refresh(env: &Env, bundle: &str, value: &str) -> Result<()> {
    let annotation = format!("secrets.ameide.io/refresh-requested-at={value}");
    kubectl_ok(env, &["annotate", "--overwrite", "sb", bundle, &annotation]).map(drop)
}

async fn data(env: &Env, ns: &str, name: &str) -> Result<BTreeMap<String, String>> {
    stack::secret_data(&env.client, ns, name)
        .await?
        .with_context(|| format!("Secret {ns}/{name} does not exist"))
}

fn keys(m: &BTreeMap<String, String>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn composed_values_arrive_with_the_exact_bytes() -> Result<()> {
    let s = Stack::start().await?;
    let password = "p@ss/w:rd%+ x";
    s.bao.put(
        "platform/db",
        &[
            ("host", "db.internal"),
            ("port", "5432"),
            ("database", "app"),
            ("username", "app"),
            ("password", password),
        ],
    )?;
    s.bao.put(
        "platform/ghcr",
        &[("username", "bot"), ("token", "ghp_123")],
    )?;
    s.bao.put("neo4j/auth", &[("password", "n3o")])?;
    s.env.create_namespace("ameide").await?;
    s.env.create_namespace("neo4j").await?;
    s.env
        .apply_bundle(&example("bundles/platform/bundle.yaml")?)
        .await?;
    s.env
        .apply_bundle(&example("bundles/neo4j/bundle.yaml")?)
        .await?;
    wait::bundle_reason(&s.env.bundles(), "platform", "Ready").await?;
    wait::bundle_reason(&s.env.bundles(), "neo4j", "Ready").await?;

    let db = data(&s.env, "ameide", "platform-db-credentials").await?;
    assert_eq!(db["url"], "jdbc:postgresql://db.internal:5432/app");
    assert_eq!(
        db["DATABASE_URL"],
        "postgresql://app:p%40ss%2Fw%3Ard%25%2B+x@db.internal:5432/app"
    );
    // mergePolicy Merge: the parts stay beside the composed keys.
    assert_eq!(
        keys(&db),
        [
            "DATABASE_URL",
            "database",
            "host",
            "password",
            "port",
            "url",
            "username"
        ]
    );
    assert_eq!(db["password"], password);

    let pull = Api::<Secret>::namespaced(s.env.client.clone(), "ameide")
        .get("ghcr-pull")
        .await?;
    assert_eq!(
        pull.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    // mergePolicy Replace (the default): only the templated key. base64("bot:ghp_123").
    assert_eq!(
        data(&s.env, "ameide", "ghcr-pull").await?,
        BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            r#"{"auths":{"ghcr.io":{"auth":"Ym90OmdocF8xMjM=","password":"ghp_123","username":"bot"}}}"#
                .to_string()
        )])
    );
    assert_eq!(
        data(&s.env, "neo4j", "neo4j-auth").await?,
        BTreeMap::from([("NEO4J_AUTH".to_string(), "neo4j/n3o".to_string())])
    );
    Ok(())
}

#[tokio::test]
async fn merge_adds_esos_keys_to_a_secret_someone_else_owns() -> Result<()> {
    let s = Stack::start().await?;
    s.bao.put(
        "argocd/admin",
        &[
            ("password", "$2a$10$hash"),
            ("passwordMtime", "2026-03-09T10:00:00Z"),
        ],
    )?;
    s.bao.put(
        "argocd/repo-creds",
        &[("url", "https://github.com/ameideio"), ("password", "pat")],
    )?;
    // Argo CD's own argocd-secret, as its chart creates it, before the bundle can apply.
    s.env.create_namespace("argocd").await?;
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "argocd");
    let argo_own: Secret = serde_json::from_value(json!({
        "metadata": {"name": "argocd-secret", "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "stringData": {"server.secretkey": "argo-own", "webhook.github.secret": "hook"}
    }))?;
    secrets.create(&Default::default(), &argo_own).await?;
    s.env
        .apply_bundle(&example("bundles/argocd/bundle.yaml")?)
        .await?;
    wait::bundle_reason(&s.env.bundles(), "argocd", "Ready").await?;
    let merged = data(&s.env, "argocd", "argocd-secret").await?;
    assert_eq!(
        merged,
        BTreeMap::from([
            ("admin.password".to_string(), "$2a$10$hash".to_string()),
            ("admin.passwordMtime".into(), "2026-03-09T10:00:00Z".into()),
            ("server.secretkey".into(), "argo-own".into()),
            ("webhook.github.secret".into(), "hook".into()),
        ])
    );
    let secret = secrets.get("argocd-secret").await?;
    assert!(secret.owner_references().is_empty(), "ESO took it over");
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/part-of")
            .map(String::as_str),
        Some("argocd")
    );

    // A Merge target that does not exist yet is waited for, not failed; once it exists a
    // refresh request makes ESO merge at once.
    s.env.create_namespace("late").await?;
    let late = bundle(&format!(
        "metadata: {{name: late}}\nspec: {{targetNamespace: late, secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: late-secret, creationPolicy: Merge, data: [{{secretKey: admin.password, remoteRef: {{key: argocd/admin, property: password}}}}]}}]}}"
    ));
    s.env.apply_bundle(&late).await?;
    wait::bundle_message(
        &s.env.bundles(),
        "late",
        "SecretsNotReady",
        "late-secret is SecretMissing: secret will not be created due to CreationPolicy=Merge",
    )
    .await?;
    assert!(
        stack::secret_data(&s.env.client, "late", "late-secret")
            .await?
            .is_none()
    );
    let own: Secret = serde_json::from_value(json!({
        "metadata": {"name": "late-secret"}, "stringData": {"own": "1"}
    }))?;
    Api::<Secret>::namespaced(s.env.client.clone(), "late")
        .create(&Default::default(), &own)
        .await?;
    refresh(&s.env, "late", "created")?;
    wait::bundle_reason(&s.env.bundles(), "late", "Ready").await?;
    assert_eq!(
        keys(&data(&s.env, "late", "late-secret").await?),
        ["admin.password", "own"]
    );

    // The bundle goes, its ExternalSecrets with it: Argo CD's Secret stays, whole.
    s.env
        .bundles()
        .delete("argocd", &DeleteParams::default())
        .await?;
    wait::until_deleted(&s.env.bundles(), "argocd").await?;
    let es = external_secrets(&s.env.client, "argocd", EsoVersion::V1);
    ensure!(es.list(&ListParams::default()).await?.items.is_empty());
    assert_eq!(data(&s.env, "argocd", "argocd-secret").await?, merged);
    Ok(())
}

#[tokio::test]
async fn retain_keeps_the_secret_when_its_source_goes_and_orphan_when_the_bundle_goes() -> Result<()>
{
    let s = Stack::start().await?;
    for (key, value) in [("keep/a", "one"), ("keep/b", "two"), ("keep/c", "three")] {
        s.bao.put(key, &[("v", value)])?;
    }
    s.env.create_namespace("keep").await?;
    let b = bundle(&format!(
        r#"
metadata: {{name: keep}}
spec:
  targetNamespace: keep
  secretStoreRef: {{name: {VAULT_STORE}}}
  secrets:
    - name: kept
      creationPolicy: Orphan
      deletionPolicy: Retain
      data: [{{secretKey: v, remoteRef: {{key: keep/a, property: v}}}}]
    - name: owned
      deletionPolicy: Retain
      data: [{{secretKey: v, remoteRef: {{key: keep/b, property: v}}}}]
    - name: dropped
      deletionPolicy: Delete
      data: [{{secretKey: v, remoteRef: {{key: keep/c, property: v}}}}]
"#
    ));
    s.env.apply_bundle(&b).await?;
    let bundles = s.env.bundles();
    wait::bundle_reason(&bundles, "keep", "Ready").await?;
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "keep");
    assert!(secrets.get("kept").await?.owner_references().is_empty());
    assert_eq!(
        secrets.get("owned").await?.owner_references()[0].kind,
        "ExternalSecret"
    );

    // The sources go. Delete: ESO deletes the Secret. Retain: ESO keeps it as it was, and says
    // it cannot read the source.
    s.bao.delete("keep/a")?;
    s.bao.delete("keep/c")?;
    refresh(&s.env, "keep", "sources-gone")?;
    wait::until_deleted(&secrets, "dropped").await?;
    wait::bundle_message(
        &bundles,
        "keep",
        "SecretSyncFailed",
        "kept is SecretSyncedError",
    )
    .await?;
    assert_eq!(data(&s.env, "keep", "kept").await?["v"], "one");

    // The bundle goes (deletionPolicy Delete), its ExternalSecrets with it: the garbage
    // collector takes the Secret ESO owned (Retain does not protect it from that); the Orphan
    // one stays.
    bundles.delete("keep", &DeleteParams::default()).await?;
    wait::until_deleted(&bundles, "keep").await?;
    wait::until_deleted(&secrets, "owned").await?;
    assert_eq!(data(&s.env, "keep", "kept").await?["v"], "one");
    Ok(())
}

/// A namespaced ESO `Password` generator.
async fn password_generator(env: &Env, ns: &str, name: &str) -> Result<()> {
    let ar = ApiResource {
        group: "generators.external-secrets.io".into(),
        version: "v1alpha1".into(),
        api_version: "generators.external-secrets.io/v1alpha1".into(),
        kind: "Password".into(),
        plural: "passwords".into(),
    };
    let generator = json!({
        "apiVersion": ar.api_version, "kind": "Password", "metadata": {"name": name},
        "spec": {"length": 16, "digits": 4, "symbols": 0, "noUpper": false, "allowRepeat": true}
    });
    Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &ar)
        .patch(
            name,
            &PatchParams::apply("features"),
            &Patch::Apply(&generator),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn generated_credentials_need_no_store_key_and_created_once_means_once() -> Result<()> {
    // OpenBao's store exists but holds none of these keys.
    let s = Stack::start().await?;
    apply_local_generator(&s.env)?;
    s.env.create_namespace("ameide").await?;
    s.env
        .apply_bundle(&local_overlay(&s.env, "platform")?)
        .await?;
    wait::bundle_reason(&s.env.bundles(), "platform", "Ready").await?;
    let db = data(&s.env, "ameide", "platform-db-credentials").await?;
    let pw = db["password"].clone();
    assert_eq!(pw.len(), 32);
    assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{pw}");
    assert_eq!(
        db["DATABASE_URL"],
        format!("postgresql://ameide:{pw}@postgres-rw.ameide.svc:5432/ameide")
    );
    assert_eq!(
        db["url"],
        "jdbc:postgresql://postgres-rw.ameide.svc:5432/ameide"
    );
    assert_eq!(db["username"], "ameide");
    let es = external_secrets(&s.env.client, "ameide", EsoVersion::V1)
        .get("platform-db-credentials")
        .await?;
    assert!(
        es.data["spec"].get("secretStoreRef").is_none(),
        "reads no store"
    );

    // CreatedOnce against OnChange, one refresh request: only OnChange generates anew.
    s.env.create_namespace("gen").await?;
    password_generator(&s.env, "gen", "pw").await?;
    let gen_bundle = bundle(&format!(
        r#"
metadata: {{name: gen}}
spec:
  targetNamespace: gen
  secretStoreRef: {{name: {VAULT_STORE}}}
  secrets:
    - name: once
      refreshPolicy: CreatedOnce
      dataFrom: [{{sourceRef: {{generatorRef: {{kind: Password, name: pw}}}}}}]
    - name: on-change
      refreshPolicy: OnChange
      refreshInterval: "0"
      dataFrom: [{{sourceRef: {{generatorRef: {{kind: Password, name: pw}}}}}}]
"#
    ));
    s.env.apply_bundle(&gen_bundle).await?;
    wait::bundle_reason(&s.env.bundles(), "gen", "Ready").await?;
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), "gen");
    // ESO v0.16.2 may sync a new CreatedOnce child twice in its first moments (a Secret event
    // read against a cache without the first sync's status), so `once` is compared across a
    // second refresh, long after that window.
    let mut once = String::new();
    for round in ["r1", "r2"] {
        let before = data(&s.env, "gen", "on-change").await?["password"].clone();
        assert_eq!(before.len(), 16);
        refresh(&s.env, "gen", round)?;
        wait::until(
            &secrets,
            "on-change",
            "a new password",
            |sec: Option<&Secret>| {
                sec.and_then(|s| {
                    let pw = s.data.as_ref()?.get("password")?;
                    Some(pw.0 != before.as_bytes())
                })
                .unwrap_or(false)
            },
        )
        .await?;
        let now = data(&s.env, "gen", "once").await?["password"].clone();
        assert_eq!(now.len(), 16);
        if round == "r2" {
            assert_eq!(now, once, "CreatedOnce generated anew on a refresh request");
        }
        once = now;
    }
    wait::bundle_message(
        &s.env.bundles(),
        "gen",
        "Ready",
        "refresh request not honoured by ESO for once (refreshPolicy is CreatedOnce)",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_field_newer_than_the_installed_eso_is_refused_until_eso_is_upgraded() -> Result<()> {
    let env = Env::start().await?;
    env.install_eso_crds("v0.10.7").await?;
    env.create_namespace("ameide").await?;
    let platform = local_overlay(&env, "platform")?;
    env.apply_bundle(&platform).await?;
    let expected = "spec.secrets[0].refreshPolicy needs ESO v0.16.1 or later: the installed \
                    ExternalSecret CRD (external-secrets.io/v1beta1) has no spec.refreshPolicy";
    let b =
        wait::bundle_message(&env.bundles(), "platform", "EsoUpgradeRequired", expected).await?;
    let status = b.status.context("status")?;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .context("Ready condition")?;
    let es = external_secrets(&env.client, "ameide", EsoVersion::V1beta1);
    assert!(
        es.list(&ListParams::default()).await?.items.is_empty(),
        "nothing applied"
    );

    // `render` refuses the same way: against the same CRD, word for word; for the release, the
    // same field and version.
    let file = env.cp.dir().join("platform.yaml");
    std::fs::write(&file, serde_yaml::to_string(&platform)?)?;
    let crd = repo_root()
        .join("tests/fixtures/eso-crds/v0.10.7/external-secrets.io_externalsecrets.yaml")
        .to_string_lossy()
        .into_owned();
    let offline = "spec.secrets[0].refreshPolicy needs ESO v0.16.1 or later: ESO v0.10.7 has no \
                   spec.refreshPolicy";
    for (flag, value, needle) in [
        ("--eso-crd", crd.as_str(), message.as_str()),
        ("--eso-version", "v0.10.7", offline),
    ] {
        let out = Command::new(operator_bin())
            .env("RUST_BACKTRACE", "0")
            .args(["render", "-f", &file.to_string_lossy(), flag, value])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "render {flag} did not refuse");
        assert!(
            stderr.contains(&format!(
                "SecretBundle platform: EsoUpgradeRequired: {needle}"
            )),
            "render {flag}: {stderr}"
        );
    }
    let explain = Command::new(operator_bin())
        .env("KUBECONFIG", env.cp.kubeconfig_path()?)
        .args(["explain", "platform"])
        .output()?;
    let explain = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.contains(&format!(
            "✘ ExternalSecret CRD: serving external-secrets.io/v1beta1, which cannot express: {expected}"
        )),
        "{explain}"
    );

    // ESO is upgraded (CRDs, generator, controller); nobody touches the bundle.
    stack::install_eso_v0_16(&env.client).await?;
    apply_local_generator(&env)?;
    let _eso = stack::start_eso(&env.cp.kubeconfig_path()?, env.cp.dir())?;
    wait::bundle_reason(&env.bundles(), "platform", "Ready").await?;
    assert_eq!(
        data(&env, "ameide", "platform-db-credentials").await?["password"].len(),
        32
    );
    Ok(())
}
