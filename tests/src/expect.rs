//! What a bad-input fixture expects the API server to say, per Kubernetes minor.
//!
//! A fixture names the message with `# expect: <text>`. Where a minor words it differently,
//! the fixture says so for that minor with `# expect@1.34: <text>` (several minors:
//! `# expect@1.34,1.35: <text>`), so every minor's check stays exact instead of shrinking to
//! what all minors have in common.

use anyhow::{Result, bail};

/// The expectations of one fixture: the default and the per-minor overrides.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    pub default: Option<String>,
    /// (minor, text), in file order.
    pub by_minor: Vec<(String, String)>,
}

impl Expectations {
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Expectations::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# expect") else {
                continue;
            };
            if let Some(msg) = rest.strip_prefix(": ") {
                if out.default.replace(msg.to_string()).is_some() {
                    bail!("two `# expect:` lines");
                }
            } else if let Some(rest) = rest.strip_prefix('@') {
                let Some((minors, msg)) = rest.split_once(": ") else {
                    bail!("`{line}`: expected `# expect@<minor>[,<minor>]: <text>`");
                };
                for minor in minors.split(',') {
                    if !is_minor(minor) {
                        bail!("`{line}`: {minor:?} is not a minor like 1.34");
                    }
                    if out.by_minor.iter().any(|(m, _)| m == minor) {
                        bail!("two expectations for {minor}");
                    }
                    out.by_minor.push((minor.to_string(), msg.to_string()));
                }
            } else {
                bail!("`{line}`: expected `# expect: <text>` or `# expect@<minor>: <text>`");
            }
        }
        if out.default.is_none() {
            bail!("no `# expect:` line");
        }
        Ok(out)
    }

    /// The message `minor`'s API server must give.
    pub fn for_minor(&self, minor: &str) -> &str {
        self.by_minor
            .iter()
            .find(|(m, _)| m == minor)
            .map(|(_, msg)| msg.as_str())
            .or(self.default.as_deref())
            .unwrap_or_default()
    }
}

fn is_minor(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// The Kubernetes minors pinned in `tools/controlplane/` (what `make skew` runs), oldest first.
pub fn pinned_minors() -> Result<Vec<String>> {
    let dir = crate::repo_root().join("tools/controlplane");
    let mut minors: Vec<(u32, u32, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some((a, b)) = name.split_once('.')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            minors.push((a, b, name));
        }
    }
    minors.sort();
    Ok(minors.into_iter().map(|(_, _, m)| m).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minor_override_wins_for_that_minor_only() {
        let e = Expectations::parse(
            "# A comment.\n# expect: new words\n# expect@1.34,1.35: old words\nkind: X\n",
        )
        .unwrap();
        assert_eq!(e.for_minor("1.34"), "old words");
        assert_eq!(e.for_minor("1.35"), "old words");
        assert_eq!(e.for_minor("1.36"), "new words");
        assert_eq!(e.for_minor("1.37"), "new words");
    }

    #[test]
    fn malformed_expectations_are_refused() {
        for (text, want) in [
            ("kind: X\n", "no `# expect:` line"),
            ("# expect: a\n# expect: b\n", "two `# expect:` lines"),
            ("# expect: a\n# expect@134: b\n", "\"134\" is not a minor"),
            (
                "# expect: a\n# expect@1.34 b\n",
                "expected `# expect@<minor>",
            ),
            (
                "# expect: a\n# expect@1.34: b\n# expect@1.34: c\n",
                "two expectations for 1.34",
            ),
            ("# expectation: a\n", "expected `# expect: <text>`"),
        ] {
            let err = Expectations::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn pinned_minors_are_sorted_numerically() {
        let minors = pinned_minors().unwrap();
        assert!(minors.len() >= 2, "{minors:?}");
        let parsed: Vec<(u32, u32)> = minors
            .iter()
            .map(|m| {
                let (a, b) = m.split_once('.').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]), "{minors:?}");
    }

    /// Every fixture parses, and a per-minor expectation names a minor we run (a stale one,
    /// for a minor no longer pinned, would never be checked again).
    #[test]
    fn corpus_overrides_name_pinned_minors() {
        let pinned = pinned_minors().unwrap();
        let dir = crate::repo_root().join("tests/fixtures/invalid-bundles");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let e = Expectations::parse(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            for (minor, _) in &e.by_minor {
                assert!(
                    pinned.contains(minor),
                    "{}: {minor} is not pinned ({pinned:?})",
                    path.display()
                );
            }
        }
    }
}
