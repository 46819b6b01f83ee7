//! `secretbundle-operator import`, the real binary: from manifests (`helm get manifest` on
//! stdin, several files), from a real API server (get and list only), and its bad-input
//! errors, each of which prints nothing. The pure conversion's properties: tests/tests/roundtrip.rs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt as _, ResourceExt as _};
use secretbundle_api::{AdoptionPolicy, SecretBundle};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_controller::reconcile::render::render;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::{ControlPlane, apply_crds, eso, repo_root};
use serde::Deserialize as _;
use serde_json::Value;

fn fixture(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/import")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn import(args: &[&str], stdin: Option<&str>, kubeconfig: Option<&Path>) -> Result<Output> {
    let mut cmd = Command::new(operator_bin());
    cmd.arg("import").args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let mut child = cmd.spawn().context("run `cargo build --bins` first")?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bundles(out: &Output) -> Result<Vec<SecretBundle>> {
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde_yaml::Value::deserialize(d).map_err(anyhow::Error::from))
        .filter(|v| !matches!(v, Ok(serde_yaml::Value::Null)))
        .map(|v| Ok(serde_yaml::from_value(v?)?))
        .collect()
}

/// The ExternalSecrets of a manifest, by name, as the user wrote them.
fn input_specs(file: &str) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(fixture(file))?;
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(d)?;
        if v["kind"] == "ExternalSecret" {
            out.push((
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                v["spec"].clone(),
            ));
        }
    }
    Ok(out)
}

/// Rendering a bundle gives back the spec of each ExternalSecret it was imported from.
fn assert_renders_back(bundle: &SecretBundle, inputs: &[(String, Value)]) -> Result<()> {
    let children = render(bundle, EsoVersion::V1)?;
    assert_eq!(children.len(), inputs.len());
    for (name, spec) in inputs {
        let child = children
            .iter()
            .find(|c| c.name_any() == *name)
            .context("child")?;
        assert_eq!(&child.data["spec"], spec, "{name}");
    }
    Ok(())
}

#[test]
fn a_helm_manifest_on_stdin_becomes_one_bundle_that_renders_it_back() -> Result<()> {
    let manifest = std::fs::read_to_string(fixture("vault-secrets-argocd.yaml"))?;
    let out = import(&["-f", "-", "-n", "argocd"], Some(&manifest), None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("ignored, not ExternalSecrets: ConfigMap vault-secrets-argocd-info"),
        "{}",
        text(&out.stderr)
    );
    let [b] = bundles(&out)?
        .try_into()
        .map_err(|b| anyhow::anyhow!("one bundle: {b:?}"))?;
    assert_eq!(
        b.name_any(),
        "vault-secrets-argocd",
        "named after the release"
    );
    assert_eq!(b.spec.target_namespace, "argocd");
    assert_eq!(b.spec.adoption_policy, AdoptionPolicy::IfExists);
    assert_eq!(
        b.spec.secret_store_ref.name, "ameide-vault",
        "the shared store, lifted"
    );
    assert!(b.spec.secrets.iter().all(|s| s.secret_store_ref.is_none()));
    assert_renders_back(&b, &input_specs("vault-secrets-argocd.yaml")?)?;

    // Without -n, an object that names no namespace is an error, and nothing is printed.
    let out = import(&["-f", "-"], Some(&manifest), None)?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("names no namespace"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn what_a_bundle_cannot_express_is_refused_by_field_and_the_rest_still_printed() -> Result<()> {
    let out = import(
        &[
            "-f",
            &fixture("partly-unsupported.yaml"),
            "--name",
            "observability",
        ],
        None,
        None,
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for field in [
        "spec.syncWindows",
        "spec.target.template.templateFrom[0].literal",
    ] {
        let line = format!("#   observability/alertmanager: {field}: ");
        assert!(stdout.contains(&line), "no comment {line:?} in:\n{stdout}");
        assert!(
            text(&out.stderr).contains(&format!("refused: observability/alertmanager: {field}"))
        );
    }
    let [b] = bundles(&out)?
        .try_into()
        .map_err(|b| anyhow::anyhow!("one bundle: {b:?}"))?;
    assert_eq!(b.name_any(), "observability");
    let names: Vec<_> = b.spec.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["grafana-admin"]);
    Ok(())
}

#[test]
fn several_files_and_a_selector() -> Result<()> {
    let (a, b) = (
        fixture("vault-secrets-argocd.yaml"),
        fixture("partly-unsupported.yaml"),
    );
    let out = import(&["-f", &a, "-f", &b, "-n", "argocd"], None, None)?;
    // partly-unsupported.yaml names observability, not argocd: as kubectl, a mismatch is an error.
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is in namespace \"observability\", not \"argocd\""));
    let out = import(&["-f", &b, "-f", &b], None, None)?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the same objects twice are refused, not merged"
    );
    assert!(text(&out.stdout).contains(
        "observability/grafana-admin: metadata.name: this ExternalSecret was given twice"
    ));
    let out = import(
        &[
            "-f",
            &a,
            "-n",
            "argocd",
            "-l",
            "app.kubernetes.io/instance=other",
        ],
        None,
        None,
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no ExternalSecret matches the selector"));
    Ok(())
}

#[test]
fn bad_input_is_an_error_and_prints_nothing() -> Result<()> {
    let not_es = fixture("not-an-external-secret.yaml");
    let cases = [
        (
            vec!["-f", not_es.as_str()],
            "no ExternalSecret in it, only ClusterExternalSecret everywhere",
        ),
        (
            vec!["-f", "/nonexistent/manifest.yaml"],
            "reading /nonexistent/manifest.yaml",
        ),
        (vec![], "give -f FILE, or -n NAMESPACE"),
    ];
    for (args, message) in cases {
        let out = import(&args, None, None)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {}",
            text(&out.stdout)
        );
    }
    let old = "apiVersion: external-secrets.io/v1alpha1\nkind: ExternalSecret\nmetadata: {name: a, namespace: b}\nspec: {}\n";
    let out = import(&["-f", "-"], Some(old), None)?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("v1alpha1 is not supported"));
    Ok(())
}

#[test]
fn help_documents_the_exit_codes_and_the_permissions() -> Result<()> {
    let out = import(&["--help"], None, None)?;
    let help = text(&out.stdout);
    for needle in [
        "Exit status: 0",
        "1 some refused",
        "2 bad input",
        "get and list on externalsecrets",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
    Ok(())
}

/// From a real API server, in each API version ESO serves: only the selected release's
/// ExternalSecrets, and a bundle our own CRD accepts (server-side dry run, strict).
#[tokio::test]
async fn from_the_cluster_with_a_selector_and_an_absent_namespace() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let mut crds = eso::crds("v0.16.2")?;
    crds.push(SecretBundle::crd());
    apply_crds(&client, crds).await?;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "argocd"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let es = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "argocd",
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    );
    let text_in = std::fs::read_to_string(fixture("vault-secrets-argocd.yaml"))?;
    for d in serde_yaml::Deserializer::from_str(&text_in) {
        let v = Value::deserialize(d)?;
        if v["kind"] == "ExternalSecret" {
            es.create(&PostParams::default(), &serde_json::from_value(v)?)
                .await?;
        }
    }
    let mut other: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "unrelated", "labels": {"app.kubernetes.io/instance": "other"}},
        "spec": {"secretStoreRef": {"name": "x", "kind": "ClusterSecretStore"},
                 "data": [{"secretKey": "k", "remoteRef": {"key": "y"}}]}}))?;
    other.metadata.namespace = Some("argocd".into());
    es.create(&PostParams::default(), &other).await?;

    let kubeconfig = cp.kubeconfig_path()?;
    let selector = "app.kubernetes.io/instance=vault-secrets-argocd";
    let out = import(&["-n", "argocd", "-l", selector], None, Some(&kubeconfig))?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let [b] = bundles(&out)?
        .try_into()
        .map_err(|b| anyhow::anyhow!("one bundle: {b:?}"))?;
    assert_eq!(b.name_any(), "vault-secrets-argocd");
    // The API server filled in ESO's defaults: the bundle carries them too.
    let live = es
        .list(&kube::api::ListParams::default().labels(selector))
        .await?;
    let live: Vec<(String, Value)> = live
        .items
        .iter()
        .map(|o| (o.name_any(), o.data["spec"].clone()))
        .collect();
    assert_eq!(live.len(), 2);
    assert_renders_back(&b, &live)?;
    let strict = PatchParams::apply("import-test")
        .dry_run()
        .validation_strict();
    Api::<SecretBundle>::all(client.clone())
        .patch(&b.name_any(), &strict, &Patch::Apply(&b))
        .await
        .context("the imported bundle must be valid")?;

    let out = import(&["-n", "nope"], None, Some(&kubeconfig))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("namespace \"nope\" does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = import(&["-n", "argocd", "-l", "app=none"], None, Some(&kubeconfig))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no ExternalSecret in namespace \"argocd\" matching"));
    Ok(())
}
