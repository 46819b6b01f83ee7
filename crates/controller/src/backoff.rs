//! How long to wait before trying again after a failure: a bundle's reconcile and its status
//! write back off alike, so the rule lives below both.

use std::time::Duration;

/// 1 s, 2 s, 4 s, ... up to 5 minutes: quick after a blip, gentle on a cluster that keeps saying no.
pub fn retry_delay(previous_failures: u32) -> Duration {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);
    BASE.saturating_mul(2u32.saturating_pow(previous_failures.min(16)))
        .min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let delays: Vec<u64> = (0..12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }
}
