//! Bad input, nothing lost: every invalid bundle in `tests/fixtures/invalid-bundles/` is applied
//! with `kubectl apply` and must be refused with the message its `# expect:` line names (the
//! API server's words, naming the field), or its `# expect@<minor>:` line where the running
//! API server's minor words it differently. A file with two documents is a change: the first
//! must be accepted, the second refused. Mistakes only the operator can see (a cycle across
//! bundles) are reported in the status instead.

use std::path::PathBuf;

use anyhow::Context as _;
use secretbundle_tests::expect::Expectations;
use secretbundle_tests::{Env, repo_root, simple_bundle, wait};

fn corpus() -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("tests/fixtures/invalid-bundles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

#[tokio::test]
async fn every_invalid_bundle_is_refused_with_a_message_naming_the_field() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let files = corpus()?;
    assert!(files.len() >= 15, "the corpus shrank: {files:?}");
    // Each minor's own words: the server's minor picks the fixture's `# expect@` line, if any.
    let minor = env.cp.minor().await?;
    eprintln!("checking the corpus against Kubernetes {minor}");
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path)?;
        let expectations =
            Expectations::parse(&text).with_context(|| format!("{}", path.display()))?;
        let expect = expectations.for_minor(&minor);
        let docs: Vec<&str> = text.split("\n---\n").collect();
        let (last, before) = docs.split_last().ok_or_else(|| anyhow::anyhow!("empty"))?;
        for doc in before {
            let (ok, out) = env.kubectl_apply(doc)?;
            anyhow::ensure!(
                ok,
                "{}: the first document must be accepted: {out}",
                path.display()
            );
        }
        let (ok, out) = env.kubectl_apply(last)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if ok || !out.contains(expect) {
            failures.push(format!(
                "{name}: accepted={ok}, expected {expect:?} (Kubernetes {minor}) in:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Nothing invalid was stored (only the valid first document of a change).
    let stored = env.bundles().list(&Default::default()).await?;
    assert_eq!(stored.items.len(), 1, "{:?}", stored.items);
    Ok(())
}

#[tokio::test]
async fn a_cycle_across_three_bundles_stalls_each_with_the_cycle_spelled_out() -> anyhow::Result<()>
{
    let env = Env::start_with_eso_v1().await?;
    for (name, dep) in [("a", "b"), ("b", "c"), ("c", "a")] {
        let mut b = simple_bundle(name, "ameide", &[name]);
        b.spec.depends_on = vec![dep.into()];
        env.apply_bundle(&b).await?;
    }
    env.create_namespace("ameide").await?;
    for (name, cycle) in [
        ("a", "a -> b -> c -> a"),
        ("b", "b -> c -> a -> b"),
        ("c", "c -> a -> b -> c"),
    ] {
        let b = wait::bundle_message(&env.bundles(), name, "DependencyCycle", cycle).await?;
        let status = b.status.expect("status");
        assert!(
            wait::condition_true(&status, "Stalled"),
            "{name}: {:?}",
            status.conditions
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_bundle_over_the_request_size_limit_is_refused_by_the_api_server() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // 128 secrets x 100 keys with 1 KiB paths: valid by the schema, about 13 MiB on the wire.
    let path = "p".repeat(1000);
    let mut yaml = String::from(
        "apiVersion: secrets.ameide.io/v1alpha1\nkind: SecretBundle\nmetadata: {name: huge}\nspec:\n  targetNamespace: ameide\n  secretStoreRef: {name: ameide-vault}\n  secrets:\n",
    );
    for s in 0..128 {
        yaml.push_str(&format!("    - name: s{s}\n      data:\n"));
        for k in 0..100 {
            yaml.push_str(&format!(
                "        - {{secretKey: k{k}, remoteRef: {{key: {path}}}}}\n"
            ));
        }
    }
    let (ok, out) = env.kubectl_apply(&yaml)?;
    assert!(!ok, "accepted a {} byte bundle", yaml.len());
    assert!(out.contains("too large"), "{out}");
    assert!(env.bundles().get_opt("huge").await?.is_none());
    Ok(())
}
