//! Durations as flags spell them (`--timeout 5m`).

use std::time::Duration;

/// Parses a Go-style duration: `90s`, `5m`, `1h30m`, `500ms`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 30s, 5m, 1h30m)");
    if text.is_empty() {
        return Err(bad());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in ["", "5", "m", "5x", "1.5h", "-1s", "5m3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
