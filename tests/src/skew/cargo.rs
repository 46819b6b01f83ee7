//! What one `cargo test --test <suite>` run said: how many tests passed and failed, and the
//! first lines of why (the libtest output, stdout and stderr merged).

/// The counts of the `test result:` line(s) and, when something failed, why.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    /// No `test result:` line at all: the build or the harness broke before any test ran.
    pub no_result: bool,
    pub why: Option<String>,
}

/// Lines kept of each failed test's output, and of all of them together.
const PER_TEST: usize = 6;
const TOTAL: usize = 20;

pub fn summarize(output: &str, success: bool) -> Summary {
    let mut s = Summary {
        no_result: true,
        ..Summary::default()
    };
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("test result: ") {
            s.no_result = false;
            s.passed += count(rest, "passed");
            s.failed += count(rest, "failed");
        }
    }
    if !success || s.failed > 0 || s.no_result {
        s.why = Some(why(output));
    }
    s
}

/// `N word` in "FAILED. 2 passed; 1 failed; 0 ignored; ...".
fn count(result: &str, word: &str) -> u32 {
    result
        .split(';')
        .filter_map(|part| part.trim().rsplit(". ").next())
        .find_map(|part| part.strip_suffix(&format!(" {word}")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Each failed test's name and the start of its panic or error; without any, the errors
/// cargo printed (a build failure) or the last lines.
fn why(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        else {
            continue;
        };
        out.push(format!("{name}:"));
        // The test's own logs come first; its failure starts at the panic or the Err it returned.
        let section = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("---- ") && **l != "failures:");
        let start = section
            .clone()
            .position(|l| l.starts_with("Error: ") || l.contains("panicked at"));
        out.extend(
            section
                .skip(start.unwrap_or(0))
                .take_while(|l| !is_backtrace(l))
                .filter(|l| !l.trim().is_empty())
                .take(PER_TEST)
                .map(|l| format!("  {l}")),
        );
    }
    if out.is_empty() {
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("error"))
            .collect();
        let picked = if errors.is_empty() {
            &lines[lines.len().saturating_sub(PER_TEST)..]
        } else {
            &errors[..]
        };
        out.extend(picked.iter().map(|l| l.to_string()));
    }
    out.truncate(TOTAL);
    out.join("\n")
}

/// Where a failure's own words end: the backtrace (a panic's or anyhow's) and libtest's hint.
fn is_backtrace(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("stack backtrace:")
        || l.starts_with("Stack backtrace:")
        || l.starts_with("note: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: &str = "running 2 tests
test a ... ok
test b ... FAILED

failures:

---- b stdout ----
2026-12-03T11:00:00Z  WARN secretbundle_controller: a log line
Error: bundle b never became Ready: Stalled (Conflict)

Stack backtrace:
   0: anyhow::error

failures:
    b

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 9.10s

error: test failed, to rerun pass `-p secretbundle-tests --test gates`
";

    #[test]
    fn a_failure_is_counted_and_told_from_its_error_on() {
        let s = summarize(FAILED, false);
        assert_eq!((s.passed, s.failed, s.no_result), (1, 1, false));
        let why = s.why.unwrap();
        assert!(why.starts_with("b:\n  Error: bundle b never"), "{why}");
        assert!(!why.contains("WARN"), "{why}");
        assert!(!why.contains("backtrace"), "{why}");
    }

    #[test]
    fn a_pass_has_no_why() {
        let out = "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        assert_eq!(
            summarize(out, true),
            Summary {
                passed: 3,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn a_build_failure_tells_the_compiler_errors() {
        let out = "   Compiling x\nerror[E0425]: cannot find value `y`\n  --> a.rs:1:1\nerror: could not compile `x`\n";
        let s = summarize(out, false);
        assert!(s.no_result);
        assert_eq!(
            s.why.as_deref(),
            Some("error[E0425]: cannot find value `y`\nerror: could not compile `x`")
        );
    }
}
