//! The version matrix (`make skew`): which suites run on each pinned Kubernetes minor, what a
//! run recorded (bench/results/skew.json) and the page generated from it
//! (docs/compatibility.md). The runner is `tests/src/bin/skew.rs`; this module is what it and
//! the sync test share.

pub mod cargo;
pub mod doc;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::repo_root;

/// One column of the matrix: a test target of this crate, whole or one test of it.
#[derive(Debug)]
pub struct Suite {
    pub name: &'static str,
    /// `cargo test --test <test>`.
    pub test: &'static str,
    /// One test of it, matched exactly; `None`: all of its tests.
    pub filter: Option<&'static str>,
    /// What it shows, for the page.
    pub checks: &'static str,
}

/// The columns, in the page's order.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "crd",
        test: "hygiene",
        filter: Some("our_crd_installs_without_warnings"),
        checks: "our CRD applies client- and server-side with no warning",
    },
    Suite {
        name: "corpus",
        test: "corpus",
        filter: None,
        checks: "every invalid bundle is refused with that minor's exact words",
    },
    Suite {
        name: "gates",
        test: "gates",
        filter: None,
        checks: "namespace, ESO CRD, dependency and store gates open and close",
    },
    Suite {
        name: "deletion",
        test: "deletion",
        filter: None,
        checks: "deletion policies under every propagation, through the garbage collector",
    },
    Suite {
        name: "dependents",
        test: "dependents",
        filter: None,
        checks: "forty dependents follow their dependency's status",
    },
    Suite {
        name: "e2e",
        test: "e2e",
        filter: Some(
            "adoption_takes_over_a_helm_made_externalsecret_without_the_secret_disappearing",
        ),
        checks: "real ESO and OpenBao: a Helm-made ExternalSecret adopted, its Secret kept",
    },
];

/// Everything `make skew` has recorded, one entry per pinned minor (oldest first).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Matrix {
    pub minors: Vec<MinorRun>,
}

/// One minor's latest run (each minor keeps its own date and commit: `make skew SKEW_MINORS=1.34`
/// replaces only that row).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MinorRun {
    pub minor: String,
    pub outcome: Outcome,
    /// Why it did not run, or the first lines of why its control plane did not build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pinned release (k8s.io/kubernetes in tools/controlplane/<minor>/kubernetes/go.mod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `hack/controlplane.sh <minor>`'s wall time, and whether it found its cache warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_seconds: Option<u64>,
    #[serde(default)]
    pub build_cached: bool,
    /// In [`SUITES`] order; a suite absent here did not run.
    #[serde(default)]
    pub suites: Vec<SuiteRun>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ran,
    BuildFailed,
    NotRun,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteRun {
    pub suite: String,
    pub passed: bool,
    pub tests_passed: u32,
    pub tests_failed: u32,
    pub seconds: u64,
    /// The first lines of why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl MinorRun {
    pub fn not_run(minor: &str, reason: &str) -> Self {
        MinorRun {
            minor: minor.to_string(),
            outcome: Outcome::NotRun,
            reason: Some(reason.to_string()),
            release: None,
            date: None,
            commit: None,
            build_seconds: None,
            build_cached: false,
            suites: Vec::new(),
        }
    }
}

impl Matrix {
    pub fn path() -> PathBuf {
        repo_root().join("bench/results/skew.json")
    }

    /// The recorded matrix (empty when none was recorded yet).
    pub fn load() -> Result<Self> {
        let path = Self::path();
        if !path.exists() {
            return Ok(Matrix::default());
        }
        let text = std::fs::read_to_string(&path)?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// One row per pinned minor, in that order: a recorded row is kept, a missing one is
    /// "not run", a row of a minor no longer pinned is dropped.
    pub fn for_pinned(mut self, pinned: &[String]) -> Self {
        let minors = pinned
            .iter()
            .map(|m| match self.minors.iter().position(|r| &r.minor == m) {
                Some(i) => self.minors.swap_remove(i),
                None => MinorRun::not_run(m, "never run by `make skew`"),
            })
            .collect();
        Matrix { minors }
    }

    /// Replaces (or adds) `run`'s minor.
    pub fn record(&mut self, run: MinorRun) {
        match self.minors.iter_mut().find(|r| r.minor == run.minor) {
            Some(row) => *row = run,
            None => self.minors.push(run),
        }
    }

    /// Writes bench/results/skew.json and docs/compatibility.md (generated from it).
    pub fn save(&self) -> Result<()> {
        std::fs::write(Self::path(), serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(doc::path(), doc::render(self))?;
        Ok(())
    }
}

/// The release a minor's pins build ("v1.34.4"), read from its go.mod.
pub fn pinned_release(minor: &str) -> Result<String> {
    let gomod = repo_root().join(format!("tools/controlplane/{minor}/kubernetes/go.mod"));
    let text = std::fs::read_to_string(&gomod)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("require k8s.io/kubernetes "))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{} requires no k8s.io/kubernetes", gomod.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expect::pinned_minors;

    /// A renamed test would leave its column running nothing: each filter names a test of its
    /// target (the runner also fails a suite that ran no test).
    #[test]
    fn every_filter_names_a_test_of_its_target() {
        for s in SUITES {
            let path = repo_root().join(format!("tests/tests/{}.rs", s.test));
            let text = std::fs::read_to_string(&path).unwrap();
            if let Some(f) = s.filter {
                assert!(text.contains(&format!("async fn {f}(")), "{}: {f}", s.test);
            }
        }
    }

    #[test]
    fn every_pinned_minor_has_a_release_of_that_minor() {
        for m in pinned_minors().unwrap() {
            let release = pinned_release(&m).unwrap();
            assert!(release.starts_with(&format!("v{m}.")), "{m}: {release}");
        }
    }

    /// The page is what the recorded run renders to (it is generated, never edited) and has a
    /// row for every pinned minor; the README states the same range and links the page.
    #[test]
    fn the_compatibility_page_is_generated_from_the_recorded_matrix() {
        let pinned = pinned_minors().unwrap();
        let matrix = Matrix::load().unwrap().for_pinned(&pinned);
        let page = std::fs::read_to_string(doc::path()).unwrap();
        assert_eq!(
            page,
            doc::render(&matrix),
            "docs/compatibility.md is stale: run `make skew` (or `make skew-doc` after pinning a minor)"
        );
        for m in &pinned {
            assert!(page.contains(&format!("\n| {m} ")), "no row for {m}");
        }
        let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
        let range = doc::range(&pinned);
        assert!(readme.contains(&range), "README does not state {range}");
        assert!(
            readme.contains("(docs/compatibility.md)"),
            "README lacks the link"
        );
    }

    #[test]
    fn a_partial_run_replaces_only_its_minor() {
        let pinned: Vec<String> = ["1.34", "1.35"].map(String::from).to_vec();
        let mut m = Matrix::default().for_pinned(&pinned);
        assert!(m.minors.iter().all(|r| r.outcome == Outcome::NotRun));
        let mut run = MinorRun::not_run("1.35", "x");
        run.outcome = Outcome::Ran;
        run.reason = None;
        m.record(run);
        let m = m.for_pinned(&["1.35".into(), "1.36".into()]);
        assert_eq!(m.minors[0].outcome, Outcome::Ran);
        assert_eq!(m.minors[1].outcome, Outcome::NotRun);
        assert_eq!(m.minors.len(), 2);
    }
}
