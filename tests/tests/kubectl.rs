//! The user's path: `kubectl get` shows the columns; `kubectl wait --for=condition=Ready`
//! returns when ready. (Bad input and its messages: tests/tests/corpus.rs.)

use secretbundle_tests::stack::{self, Stack, VAULT_STORE};
use secretbundle_tests::wait;

fn bundle_yaml(name: &str, ns: &str, spec_extra: &str, secrets: &str) -> String {
    format!(
        "apiVersion: secrets.ameide.io/v1alpha1\nkind: SecretBundle\nmetadata:\n  name: {name}\nspec:\n  targetNamespace: {ns}\n  secretStoreRef: {{name: test-store}}\n{spec_extra}  secrets:\n{secrets}"
    )
}

const ONE_SECRET: &str = "    - name: db\n      data: [{secretKey: password, remoteRef: {key: platform/db, property: password}}]\n";

/// The seed's `secrets-smoke` check, with the real ESO and OpenBao behind the bundle.
#[tokio::test]
async fn kubectl_get_shows_columns_and_wait_returns_when_ready() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let env = &s.env;
    s.bao.put("platform/db", &[("password", "pw")])?;
    let yaml = bundle_yaml("platform", "ameide", "", ONE_SECRET).replace("test-store", VAULT_STORE);
    let (ok, out) = env.kubectl_apply(&yaml)?;
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
