//! The user's path: `kubectl apply` of bad input is rejected with a message naming the field;
//! `kubectl get` shows the columns; `kubectl wait --for=condition=Ready` returns when ready.

use std::io::Write as _;

use secretbundle_tests::stack::{self, Stack, VAULT_STORE};
use secretbundle_tests::{Env, wait};

fn apply(env: &Env, yaml: &str) -> anyhow::Result<(bool, String)> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(yaml.as_bytes())?;
    let out = env.kubectl(&["apply", "-f", &file.path().to_string_lossy()])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn bundle_yaml(name: &str, ns: &str, spec_extra: &str, secrets: &str) -> String {
    format!(
        "apiVersion: secrets.ameide.io/v1alpha1\nkind: SecretBundle\nmetadata:\n  name: {name}\nspec:\n  targetNamespace: {ns}\n  secretStoreRef: {{name: test-store}}\n{spec_extra}  secrets:\n{secrets}"
    )
}

const ONE_SECRET: &str = "    - name: db\n      data: [{secretKey: password, remoteRef: {key: platform/db, property: password}}]\n";

#[tokio::test]
async fn bad_input_is_rejected_naming_the_field() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let cases = [
        (
            "inline secret value",
            bundle_yaml(
                "a",
                "ns",
                "",
                "    - name: db\n      data: [{secretKey: password, value: hunter2, remoteRef: {key: platform/db}}]\n",
            ),
            r#"unknown field "spec.secrets[0].data[0].value""#,
        ),
        (
            "empty secrets",
            bundle_yaml("a", "ns", "", "    []\n").replace("secrets:\n    []", "secrets: []"),
            "spec.secrets: Invalid value",
        ),
        (
            "duplicate secret names",
            bundle_yaml("a", "ns", "", &format!("{ONE_SECRET}{ONE_SECRET}")),
            r#"spec.secrets[1]: Duplicate value: {"name":"db"}"#,
        ),
        (
            "invalid namespace name",
            bundle_yaml("a", "Not_A_Namespace", "", ONE_SECRET),
            "spec.targetNamespace: Invalid value",
        ),
        (
            "self dependency",
            bundle_yaml("a", "ns", "  dependsOn: [a]\n", ONE_SECRET),
            "spec.dependsOn: Invalid value: a bundle cannot depend on itself",
        ),
        (
            "secret without data",
            bundle_yaml("a", "ns", "", "    - name: db\n"),
            "each secret needs at least one entry in data or dataFrom",
        ),
        (
            "ESO deleting a Secret it does not own",
            bundle_yaml(
                "a",
                "ns",
                "",
                &format!("{ONE_SECRET}      creationPolicy: Merge\n      deletionPolicy: Delete\n"),
            ),
            "deletionPolicy Delete needs creationPolicy Owner",
        ),
        (
            "merging into no Secret",
            bundle_yaml(
                "a",
                "ns",
                "",
                &format!("{ONE_SECRET}      creationPolicy: None\n      deletionPolicy: Merge\n"),
            ),
            "deletionPolicy Merge cannot be used with creationPolicy None",
        ),
        (
            "a creation policy ESO v0.16 does not have",
            bundle_yaml(
                "a",
                "ns",
                "",
                &format!("{ONE_SECRET}      creationPolicy: CreateOrMerge\n"),
            ),
            r#"spec.secrets[0].creationPolicy: Unsupported value: "CreateOrMerge""#,
        ),
        (
            "two sources in one dataFrom entry",
            bundle_yaml(
                "a",
                "ns",
                "",
                "    - name: db\n      dataFrom: [{extract: {key: a}, sourceRef: {generatorRef: {kind: Password, name: pw}}}]\n",
            ),
            "each dataFrom entry needs exactly one of extract, find or sourceRef",
        ),
        (
            "find matching everything",
            bundle_yaml(
                "a",
                "ns",
                "",
                "    - name: db\n      dataFrom: [{find: {path: db/}}]\n",
            ),
            "find needs a name regexp or tags",
        ),
        (
            "rewrite both ways at once",
            bundle_yaml(
                "a",
                "ns",
                "",
                "    - name: db\n      dataFrom: [{extract: {key: a}, rewrite: [{regexp: {source: a, target: b}, transform: {template: x}}]}]\n",
            ),
            "each rewrite needs exactly one of regexp or transform",
        ),
        (
            "template from two places",
            bundle_yaml(
                "a",
                "ns",
                "",
                &format!(
                    "{ONE_SECRET}      template: {{templateFrom: [{{configMap: {{name: a, items: [{{key: k}}]}}, secret: {{name: b, items: [{{key: k}}]}}}}]}}\n"
                ),
            ),
            "each templateFrom entry needs exactly one of configMap or secret",
        ),
    ];
    for (what, yaml, expected) in cases {
        let (ok, out) = apply(&env, &yaml)?;
        assert!(!ok, "{what}: accepted:\n{out}");
        assert!(
            out.contains(expected),
            "{what}: expected {expected:?} in:\n{out}"
        );
    }

    let (ok, out) = apply(&env, &bundle_yaml("fixed", "ns-a", "", ONE_SECRET))?;
    assert!(ok, "{out}");
    let (ok, out) = apply(&env, &bundle_yaml("fixed", "ns-b", "", ONE_SECRET))?;
    assert!(
        !ok && out.contains(
            "targetNamespace is immutable; create a new SecretBundle for another namespace"
        ),
        "{out}"
    );
    Ok(())
}

/// The seed's `secrets-smoke` check, with the real ESO and OpenBao behind the bundle.
#[tokio::test]
async fn kubectl_get_shows_columns_and_wait_returns_when_ready() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let env = &s.env;
    s.bao.put("platform/db", &[("password", "pw")])?;
    let yaml = bundle_yaml("platform", "ameide", "", ONE_SECRET).replace("test-store", VAULT_STORE);
    let (ok, out) = apply(env, &yaml)?;
    assert!(ok, "{out}");
    wait::bundle_reason(&env.bundles(), "platform", "WaitingForNamespace").await?;

    let out = env.kubectl(&["get", "secretbundles"])?;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "TARGET", "READY", "SECRETS", "REASON", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["platform", "ameide", "False", "0/1", "WaitingForNamespace"],
        "{table}"
    );
    let wide = env.kubectl(&["get", "sb", "-o", "wide"])?;
    assert!(String::from_utf8_lossy(&wide.stdout).contains(r#"namespace "ameide" does not exist"#));

    // `kubectl wait` blocks while the bundle waits, and returns once ESO has synced the Secret.
    let kubeconfig = env.cp.kubeconfig_path()?;
    let waiter = tokio::task::spawn_blocking(move || {
        secretbundle_tests::kubectl_with(
            &kubeconfig,
            &[
                "wait",
                "--for=condition=Ready",
                "sb",
                "--all",
                "--timeout=60s",
            ],
        )
    });
    env.create_namespace("ameide").await?;
    let out = waiter.await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "secretbundle.secrets.ameide.io/platform condition met"
    );
    let data = stack::secret_data(&env.client, "ameide", "db")
        .await?
        .unwrap_or_default();
    assert_eq!(
        data.get("password").map(String::as_str),
        Some("pw"),
        "the Secret exists when wait returns"
    );

    let out = env.kubectl(&["get", "sb", "platform"])?;
    let row: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(&row[..5], ["platform", "ameide", "True", "1/1", "Ready"]);
    // The CRD joins no category: `kubectl get secrets` still means Secrets.
    let out = env.kubectl(&["get", "secrets", "-n", "ameide", "-o", "name"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret/db");
    Ok(())
}
