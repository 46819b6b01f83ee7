//! `secretbundle-operator diff`, the real binary, on a real control plane, run as a CI identity
//! bound only to the documented role (examples/ci/diff-rbac.yaml): no change is exit 0 and
//! silence; a changed key, a new, a removed and an adopted child are exit 1 with their diffs;
//! after the bundle is applied the diff is empty again (so it showed exactly what the controller
//! applies); a bundle waiting for its namespace says so; an invalid bundle gets the apiserver's
//! own words and exit 2; and nothing the diff does writes anything.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;
use kube::api::{DynamicObject, PostParams};
use secretbundle_controller::applied::APPLIED_HASH_ANNOTATION;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::{Env, eso, identity, repo_root, wait};
use serde::Deserialize as _;
use serde_json::json;

/// What one run of `diff` said.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn diff(kubeconfig: &Path, files: &[&Path], stdin: Option<&str>) -> Result<Run> {
    let mut cmd = Command::new(operator_bin());
    cmd.env("KUBECONFIG", kubeconfig).arg("diff");
    for f in files {
        cmd.arg("-f").arg(f);
    }
    if stdin.is_some() {
        cmd.args(["-f", "-"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run `cargo build --bins` first")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `secretbundle-operator render -f -` of `yaml`, parsed.
fn render(yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut child = Command::new(operator_bin())
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(yaml.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|d| DynamicObject::deserialize(d).context("rendered YAML"))
        .collect()
}

fn bundle_yaml(name: &str, ns: &str, secrets: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: secrets.ameide.io/v1alpha1\nkind: SecretBundle\nmetadata:\n  name: {name}\n\
         spec:\n  targetNamespace: {ns}\n  secretStoreRef:\n    name: {}\n  secrets:\n",
        eso::TEST_STORE
    );
    for (secret, property) in secrets {
        yaml.push_str(&format!(
            "    - name: {secret}\n      data:\n        - secretKey: value\n          remoteRef:\n            \
             key: {name}/{secret}\n            property: {property}\n"
        ));
    }
    yaml
}

/// A hand-made ExternalSecret taken over by a bundle entry.
const LEGACY_ENTRY: &str = "    - name: legacy
      adoptionPolicy: IfExists
      data:
        - secretKey: value
          remoteRef:
            key: apps/legacy
            property: value
";

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A kubeconfig for the ServiceAccount of examples/ci/diff-rbac.yaml, bound to its role only.
async fn ci_identity(env: &Env) -> Result<PathBuf> {
    env.create_namespace("ci").await?;
    let rbac = repo_root().join("examples/ci/diff-rbac.yaml");
    let out = env.kubectl(&["apply", "-f", &rbac.to_string_lossy()])?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = identity::service_account_token(&env.client, "ci", "secretbundle-diff").await?;
    env.cp.token_kubeconfig_path("ci-diff", &token)
}

#[tokio::test]
async fn diff_shows_what_applying_would_change_as_the_documented_ci_role() -> Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace("apps").await?;
    let kubeconfig = ci_identity(&env).await?;
    let dir = tempfile::tempdir()?;
    let es = eso::external_secrets(&env.client, "apps", EsoVersion::V1);

    // Live: the bundle with db and cache, applied by the controller; and a hand-made `legacy`.
    let v1 = bundle_yaml("apps", "apps", &[("db", "value"), ("cache", "value")]);
    env.apply_bundle(&secretbundle_tests::bundle(&v1)).await?;
    for name in ["db", "cache"] {
        wait::until(&es, name, "applied", |o: Option<&DynamicObject>| {
            o.is_some()
        })
        .await?;
    }
    let legacy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "legacy", "namespace": "apps", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"secretStoreRef": {"kind": "ClusterSecretStore", "name": eso::TEST_STORE},
            "refreshInterval": "1h",
            "data": [{"secretKey": "value", "remoteRef": {"key": "apps/legacy", "property": "value"}}]}
    }))?;
    es.create(&PostParams::default(), &legacy).await?;

    let v1_file = write(dir.path(), "v1.yaml", &v1)?;
    let same = diff(&kubeconfig, &[&v1_file], None)?;
    assert_eq!(same.code, Some(0), "{same:?}");
    assert_eq!((same.out.as_str(), same.err.as_str()), ("", ""));

    // v2: db reads another property, cache is gone, queue is new, legacy is adopted. Read from
    // stdin, as from `kustomize build`, with a document of another kind that is skipped.
    let v2 = bundle_yaml("apps", "apps", &[("db", "password"), ("queue", "value")]) + LEGACY_ENTRY;
    let kustomized = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\n{v2}");
    let before = es.get("db").await?.resource_version();
    let changed = diff(&kubeconfig, &[], Some(&kustomized))?;
    println!("diff of one real change:\n{}", changed.out);
    assert_eq!(changed.code, Some(1), "{changed:?}");
    assert_eq!(
        changed.err,
        "note: skipping Namespace apps (stdin (document 1)): diff compares SecretBundles only\n"
    );
    for line in [
        "SecretBundle apps: would change ExternalSecret apps/db\n--- live/apps/db\n+++ applied/apps/db\n",
        "-      property: value\n+      property: password\n",
        "SecretBundle apps: would create ExternalSecret apps/queue\n--- /dev/null\n",
        "+      key: apps/queue\n",
        "SecretBundle apps: would change ExternalSecret apps/legacy (adopting it)\n",
        "+    secrets.ameide.io/bundle: apps\n",
        "SecretBundle apps: would prune ExternalSecret apps/cache: no longer in spec.secrets\n",
        "-  name: cache\n",
    ] {
        assert!(
            changed.out.contains(line),
            "missing {line:?} in:\n{}",
            changed.out
        );
    }
    assert!(!changed.out.contains("managedFields"), "{}", changed.out);
    assert_eq!(
        es.get("db").await?.resource_version(),
        before,
        "a dry run wrote"
    );
    assert!(es.get_opt("queue").await?.is_none(), "a dry run created");

    // Applied for real, the controller does exactly what the diff showed: nothing is left.
    env.apply_bundle(&secretbundle_tests::bundle(&v2)).await?;
    wait::until(&es, "db", "v2 applied", |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.data["spec"]["data"][0]["remoteRef"]["property"] == "password")
    })
    .await?;
    wait::until(&es, "legacy", "adopted", |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.labels().contains_key(secretbundle_api::BUNDLE_LABEL))
    })
    .await?;
    wait::until(&es, "queue", "created", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;
    wait::until_deleted(&es, "cache").await?;

    // With a second file: a bundle whose namespace is absent says so, and is no difference.
    let v2_file = write(dir.path(), "v2.yaml", &v2)?;
    let later = write(
        dir.path(),
        "later.yaml",
        &bundle_yaml("later", "not-yet", &[("a", "value")]),
    )?;
    let settled = diff(&kubeconfig, &[&v2_file, &later], None)?;
    assert_eq!(settled.code, Some(0), "{settled:?}");
    assert_eq!(
        settled.out,
        "SecretBundle later: WaitingForNamespace: namespace \"not-yet\" does not exist; \
         nothing would be applied or pruned now\n"
    );
    assert_eq!(settled.err, "");

    // A bundle waiting on a dependency says so in the controller's words, and is no difference.
    let waiting = bundle_yaml("needs", "apps", &[("n", "value")])
        .replace("spec:\n", "spec:\n  dependsOn: [nope]\n");
    let dep = diff(&kubeconfig, &[], Some(&waiting))?;
    assert_eq!(dep.code, Some(0), "{dep:?}");
    assert_eq!(
        dep.out,
        "SecretBundle needs: WaitingForDependency: waiting for bundles to be Ready: nope (not found); \
         nothing would be applied or pruned now\n"
    );

    // `render` of the live bundle (it carries its UID, as from `kubectl get -o yaml`) prints
    // each child exactly as applied: the same applied-hash, the same owner.
    let live_bundle = serde_yaml::to_string(&env.bundles().get("apps").await?)?;
    let rendered = render(&live_bundle)?;
    assert_eq!(rendered.len(), 3);
    for child in &rendered {
        let live = es.get(&child.name_any()).await?;
        let hash = |o: &DynamicObject| o.annotations().get(APPLIED_HASH_ANNOTATION).cloned();
        assert_eq!(hash(child), hash(&live), "{}", child.name_any());
        assert!(hash(child).is_some());
        assert_eq!(child.owner_references(), live.owner_references());
    }
    // From the file, without the UID: no owner, so another hash, as `render --help` says.
    let offline = render(&v2)?;
    assert!(offline.iter().all(|c| c.owner_references().is_empty()));
    assert_ne!(
        offline[0].annotations().get(APPLIED_HASH_ANNOTATION),
        rendered[0].annotations().get(APPLIED_HASH_ANNOTATION)
    );

    // Invalid bundles: the CRD's own rules, in the apiserver's words, and exit 2; nothing is
    // created. Moving an existing bundle checks the transition rule against the live bundle.
    let empty = bundle_yaml("broken", "apps", &[]) + "    - name: nothing\n";
    let broken = diff(&kubeconfig, &[], Some(&empty))?;
    assert_eq!(broken.code, Some(2), "{broken:?}");
    assert!(
        broken
            .err
            .contains("each secret needs at least one entry in data or dataFrom"),
        "{broken:?}"
    );
    assert!(env.bundles().get_opt("broken").await?.is_none());
    let moved = diff(
        &kubeconfig,
        &[],
        Some(&v2.replace("targetNamespace: apps", "targetNamespace: other")),
    )?;
    assert_eq!(moved.code, Some(2), "{moved:?}");
    assert!(
        moved.err.starts_with("SecretBundle apps: invalid: ")
            && moved.err.contains(
                "targetNamespace is immutable; create a new SecretBundle for another namespace"
            ),
        "{moved:?}"
    );
    let typo = diff(
        &kubeconfig,
        &[],
        Some(&v2.replace("targetNamespace", "targetNamspace")),
    )?;
    assert_eq!(typo.code, Some(2), "{typo:?}");
    assert!(
        typo.err.contains(r#"unknown field "spec.targetNamspace""#),
        "{typo:?}"
    );
    Ok(())
}

#[test]
fn unreadable_input_is_exit_2_before_the_cluster_is_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nowhere = dir.path().join("kubeconfig-that-does-not-exist");
    let missing = dir.path().join("missing.yaml");
    let run = diff(&nowhere, &[&missing], None)?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.err
            .starts_with(&format!("error: reading {}", missing.display())),
        "{run:?}"
    );
    let bad = write(dir.path(), "bad.yaml", "kind: SecretBundle\nmetadata: [")?;
    let run = diff(&nowhere, &[&bad], None)?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.err.contains("is not valid YAML"), "{run:?}");
    Ok(())
}

/// The help's RBAC table is exactly the example role, so neither goes stale.
#[test]
fn help_states_the_exit_codes_and_exactly_the_documented_role() -> Result<()> {
    let out = Command::new(operator_bin())
        .args(["diff", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    for code in ["0  no difference", "1  differences", "2  error"] {
        assert!(help.contains(code), "{code:?} in:\n{help}");
    }
    let table: BTreeMap<String, String> = help
        .lines()
        .skip_while(|l| !l.starts_with("RBAC for a CI job (examples/ci/diff-rbac.yaml)"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let (resource, verbs) = l.trim().split_once(' ')?;
            Some((resource.to_string(), verbs.trim().to_string()))
        })
        .collect();
    let text = std::fs::read_to_string(repo_root().join("examples/ci/diff-rbac.yaml"))?;
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .filter_map(Result::ok)
        .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole"))
        .context("no ClusterRole")?;
    let role: ClusterRole = serde_yaml::from_value(role)?;
    let mut granted = BTreeMap::new();
    for rule in role.rules.unwrap_or_default() {
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.iter().flatten() {
                let name = if group.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}.{group}")
                };
                granted.insert(name, rule.verbs.join(", "));
            }
        }
    }
    assert_eq!(
        table, granted,
        "diff --help and examples/ci/diff-rbac.yaml disagree"
    );
    Ok(())
}
