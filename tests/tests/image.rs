//! The image and the chart as users pull them: built without a Docker engine (`make image`),
//! pushed to a local OCI registry, pulled back and compared with the Dockerfile; the binary
//! extracted from the layer runs alone in an otherwise empty root. The chart goes to the same
//! registry as an OCI artifact.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, Result};
use secretbundle_tests::oci::{self, Registry, dockerfile_final_stage, output};
use secretbundle_tests::repo_root;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn revision() -> Result<String> {
    Ok(output(
        Command::new("git")
            .arg("-C")
            .arg(repo_root())
            .args(["rev-parse", "HEAD"]),
    )?
    .trim()
    .to_string())
}

#[tokio::test]
async fn image_pulled_back_is_what_the_dockerfile_declares_and_runs() -> Result<()> {
    let registry = Registry::start().await?;
    let reference = registry.push_image(VERSION)?;
    let manifest: Value = serde_json::from_str(&registry.crane(&["manifest", &reference])?)?;
    let config: Value = serde_json::from_str(&registry.crane(&["config", &reference])?)?;
    let stage = dockerfile_final_stage()?;
    let c = &config["config"];

    // What the Dockerfile's final stage declares.
    assert_eq!(stage.from, "scratch");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(c["User"], stage.user.as_str());
    assert_eq!(stage.user, "65532:65532", "numeric, non-root");
    assert_eq!(strings(&c["Entrypoint"]), stage.entrypoint);
    assert_eq!(strings(&c["Cmd"]), stage.cmd);
    assert_eq!(strings(&c["Env"]), stage.env);
    let ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(ports, stage.expose);
    let revision = revision()?;
    let args = BTreeMap::from([("VERSION", VERSION), ("REVISION", revision.as_str())]);
    let labels = c["Labels"].as_object().context("no labels")?;
    assert_eq!(labels.len(), stage.labels.len(), "{labels:?}");
    for key in stage.labels.keys() {
        let want = stage.label(key, &args);
        assert_eq!(labels[key].as_str(), want.as_deref(), "label {key}");
        assert_eq!(manifest["annotations"][key].as_str(), want.as_deref());
    }
    for key in ["source", "version", "revision"] {
        assert!(labels.contains_key(&format!("org.opencontainers.image.{key}")));
    }
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().context("no layers")?;
    assert_eq!(layers.len(), 1, "the binary only: {layers:?}");

    // The binary's dependencies, each a package of Cargo.lock at its locked version.
    let deps = manifest["annotations"]["io.ameide.secretbundle.cargo-dependencies"]
        .as_str()
        .context("no dependency annotation")?;
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock"))?;
    for dep in deps.lines() {
        let (name, version) = dep.split_once(" v").context(dep.to_string())?;
        let entry = format!("name = \"{name}\"\nversion = \"{version}\"");
        assert!(lock.contains(&entry), "{dep} is not in Cargo.lock");
    }
    for name in [
        "kube-client ",
        "tokio ",
        "rustls ",
        "secretbundle-controller ",
    ] {
        assert!(deps.lines().any(|l| l.starts_with(name)), "{name}missing");
    }
    assert!(
        !deps.contains("proptest"),
        "test-only crates are not in the binary"
    );

    // The filesystem: one root-owned executable where the COPY put it, no shell, nothing else.
    let dir = tempfile::tempdir()?;
    let rootfs = registry.export_rootfs(&reference, dir.path())?;
    let listing = output(
        Command::new("tar")
            .arg("-tvf")
            .arg(dir.path().join("rootfs.tar"))
            .arg("--numeric-owner"),
    )?;
    let entries: Vec<&str> = listing.lines().collect();
    let (_, dst) = stage.copies.first().context("no COPY")?;
    assert_eq!(entries.len(), 1, "{listing}");
    let f: Vec<&str> = entries[0].split_whitespace().collect();
    assert_eq!((f[0], f[1]), ("-rwxr-xr-x", "0/0"), "{listing}");
    assert_eq!(f.last().copied(), Some(dst.trim_start_matches('/')));
    assert_eq!(stage.entrypoint.first(), Some(dst));

    // It runs as the image's user in a root holding nothing else: static, no libc, no shell.
    let version = output(
        Command::new("/usr/sbin/chroot")
            .arg(format!("--userspec={}", stage.user))
            .arg(&rootfs)
            .arg(dst)
            .arg("--version")
            .env_clear(),
    )?;
    assert_eq!(version.trim(), format!("secretbundle-operator {VERSION}"));
    let size = layers[0]["size"].as_u64().unwrap_or_default();
    eprintln!(
        "image {reference}: {} bytes compressed, {} dependencies; config {}",
        size,
        deps.lines().count(),
        serde_json::to_string(c)?
    );

    // The chart, as an OCI artifact beside the image.
    let chart = registry.push_chart()?;
    let chart_ref = format!("{}:{VERSION}", chart.trim_start_matches("oci://"));
    let chart_manifest: Value = serde_json::from_str(&registry.crane(&["manifest", &chart_ref])?)?;
    assert_eq!(
        chart_manifest["config"]["mediaType"],
        "application/vnd.cncf.helm.config.v1+json"
    );
    let shown = output(registry.helm().args([
        "show",
        "chart",
        &chart,
        "--plain-http",
        "--version",
        VERSION,
    ]))?;
    assert!(shown.contains(&format!("appVersion: {VERSION}")), "{shown}");
    Ok(())
}

/// What the builder refuses, by name: no static binary, a base image, a shell-form command,
/// a root or named user.
#[test]
fn image_builder_refuses_what_cannot_work() -> Result<()> {
    let tool = oci::image_dir()?.join("oci-image");
    let dir = tempfile::tempdir()?;
    let run = |dockerfile: &str, binary: &str| -> Result<String> {
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, dockerfile)?;
        let out = Command::new(&tool)
            .arg("-dockerfile")
            .arg(&path)
            .args(["-binary", binary, "-out"])
            .arg(dir.path().join("out"))
            .output()?;
        assert!(!out.status.success(), "{dockerfile} was accepted");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let good = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    let missing = run(&good, "/nonexistent/secretbundle-operator")?;
    assert!(missing.contains("run `make static` first"), "{missing}");
    let bin = dir.path().join("bin");
    std::fs::write(&bin, "")?;
    let bin = bin.to_string_lossy();
    for (from, to, message) in [
        (
            "FROM scratch",
            "FROM debian:12",
            "the final stage must be FROM scratch",
        ),
        (
            r#"CMD ["run"]"#,
            "CMD run",
            "(CMD): want the JSON form: the image has no shell",
        ),
        (
            "USER 65532:65532",
            "USER 0:0",
            "want a numeric non-root UID:GID",
        ),
        (
            "USER 65532:65532",
            "USER nonroot",
            "want a numeric non-root UID:GID",
        ),
        (
            "EXPOSE 8080/tcp",
            "HEALTHCHECK CMD true",
            "(HEALTHCHECK): not supported",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let err = run(&good.replace(from, to), &bin)?;
        assert!(err.contains(message), "{to}: {err}");
    }
    // And the make target names the missing binary rather than failing somewhere inside.
    let out = Command::new(repo_root().join("hack/image.sh"))
        .env("SB_STATIC_BIN", "/nonexistent/secretbundle-operator")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("run `make static` first"),
        "{err}"
    );
    Ok(())
}

/// The image is built by the compiler every other build uses: the Dockerfile's builder is the
/// release rust-toolchain.toml pins, so the applied hash and everything else computed is the
/// same in the image as in the tests.
#[test]
fn the_dockerfile_builds_with_the_pinned_toolchain() -> Result<()> {
    let pin = std::fs::read_to_string(repo_root().join("rust-toolchain.toml"))?;
    let channel = pin
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .context("channel in rust-toolchain.toml")?
        .trim_matches('"');
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .context("a FROM rust:<release> builder stage")?;
    assert!(
        builder.starts_with(&format!("{channel}-")),
        "Dockerfile builds with rust:{builder}, rust-toolchain.toml pins {channel}"
    );
    Ok(())
}
