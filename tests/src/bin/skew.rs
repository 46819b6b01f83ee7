//! `make skew`: for each pinned Kubernetes minor (or those named), builds its control plane
//! (`nice -n 19 hack/controlplane.sh <minor>`), then runs the matrix's suites
//! ([`secretbundle_tests::skew::SUITES`]) on it through `SB_ASSETS`, one minor at a time.
//! After every step it rewrites bench/results/skew.json (only the minors it runs change) and
//! docs/compatibility.md from it, so an interrupted run still leaves an honest page.
//!
//! Usage: `skew [MINOR...]` (default: every pinned minor); `skew --render` only regenerates
//! the page from the recorded JSON. Each suite's full output goes to target/skew/.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use secretbundle_tests::expect::pinned_minors;
use secretbundle_tests::repo_root;
use secretbundle_tests::skew::{Matrix, MinorRun, Outcome, SUITES, Suite, SuiteRun, cargo};

fn main() -> Result<()> {
    let pinned = pinned_minors()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut matrix = Matrix::load()?.for_pinned(&pinned);
    if args == ["--render"] {
        return matrix.save();
    }
    let minors = if args.is_empty() {
        pinned.clone()
    } else {
        args
    };
    if let Some(m) = minors.iter().find(|m| !pinned.contains(m)) {
        eprintln!(
            "skew: Kubernetes {m} is not pinned; pinned minors: {} (add tools/controlplane/{m}/ to support it)",
            pinned.join(" ")
        );
        std::process::exit(2);
    }
    let (date, commit) = (utc_now()?, commit()?);
    // Compile every suite first, so a suite's time is its run, not the build.
    let mut build = cargo_test();
    build.arg("--no-run");
    for s in SUITES {
        build.args(["--test", s.test]);
    }
    if !build.status()?.success() {
        bail!("the suites do not build");
    }
    for minor in &minors {
        let mut run = MinorRun::not_run(minor, "");
        run.reason = None;
        run.release = Some(secretbundle_tests::skew::pinned_release(minor)?);
        run.date = Some(date.clone());
        run.commit = Some(commit.clone());
        eprintln!("== Kubernetes {minor}: building its control plane");
        let started = Instant::now();
        let built = build_control_plane(minor)?;
        run.build_seconds = Some(started.elapsed().as_secs());
        let assets = match built {
            Ok((assets, cached)) => {
                run.build_cached = cached;
                run.outcome = Outcome::Ran;
                assets
            }
            Err(why) => {
                run.outcome = Outcome::BuildFailed;
                run.reason = Some(why);
                matrix.record(run);
                matrix.save()?;
                continue;
            }
        };
        for s in SUITES {
            let result = run_suite(s, minor, &assets)?;
            let verdict = if result.passed { "pass" } else { "FAIL" };
            eprintln!("== {minor} {}: {verdict} in {} s", s.name, result.seconds);
            run.suites.push(result);
            matrix.record(run.clone());
            matrix.save()?;
        }
        matrix.record(run);
        matrix.save()?;
    }
    Ok(())
}

fn cargo_test() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo_root())
        .args(["test", "--locked", "-p", "secretbundle-tests"]);
    c
}

/// The assets directory and whether it was already built, or the last lines of why not.
fn build_control_plane(minor: &str) -> Result<std::result::Result<(PathBuf, bool), String>> {
    let mut child = Command::new("nice")
        .args(["-n", "19"])
        .arg(repo_root().join("hack/controlplane.sh"))
        .arg(minor)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running hack/controlplane.sh")?;
    // Shown as it comes (a cold build takes many minutes), the tail kept for the page.
    let stderr = child.stderr.take().context("no stderr")?;
    let mut tail = VecDeque::new();
    let mut cached = true;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        eprintln!("{line}");
        cached &= !line.starts_with("building ");
        tail.push_back(line);
        if tail.len() > 15 {
            tail.pop_front();
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Ok(Err(Vec::from(tail).join("\n")));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Ok((PathBuf::from(dir), cached)))
}

fn run_suite(s: &Suite, minor: &str, assets: &std::path::Path) -> Result<SuiteRun> {
    let logs = repo_root().join("target/skew");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{minor}-{}.log", s.name));
    let log = std::fs::File::create(&log_path)?;
    let mut c = cargo_test();
    c.args(["--test", s.test, "--"])
        .env("SB_ASSETS", assets)
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(f) = s.filter {
        c.args(["--exact", f]);
    }
    eprintln!(
        "== {minor} {}: cargo test --test {} (log: {})",
        s.name,
        s.test,
        log_path.display()
    );
    let started = Instant::now();
    let status = c.status()?;
    let seconds = started.elapsed().as_secs();
    let output = std::fs::read_to_string(&log_path)?;
    let sum = cargo::summarize(&output, status.success());
    // A suite that ran nothing proves nothing.
    let ran_none = sum.passed + sum.failed == 0;
    Ok(SuiteRun {
        suite: s.name.to_string(),
        passed: status.success() && sum.failed == 0 && !ran_none,
        tests_passed: sum.passed,
        tests_failed: sum.failed,
        seconds,
        why: match (sum.why, ran_none) {
            (Some(why), _) => Some(why),
            (None, true) => Some("no test ran (filter matched nothing?)".into()),
            (None, false) => None,
        },
    })
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn utc_now() -> Result<String> {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

/// The commit the run tested, `+dirty` when tracked files differ from it (other than the two
/// files the run itself writes).
fn commit() -> Result<String> {
    let root = repo_root();
    let head =
        output(
            Command::new("git")
                .current_dir(&root)
                .args(["rev-parse", "--short=10", "HEAD"]),
        )?;
    let changes = output(Command::new("git").current_dir(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!bench/results/skew.json",
        ":!docs/compatibility.md",
    ]))?;
    Ok(if changes.is_empty() {
        head
    } else {
        format!("{head}+dirty")
    })
}
