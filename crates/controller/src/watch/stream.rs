//! What every watch here shares: how it retries, and how its events become cache entries.

use std::time::Duration;

use kube::runtime::utils::Backoff;
use kube::runtime::watcher;

/// Delays between watch retries: at once, then 0.5 s doubling up to 5 s; from the start again
/// after any event.
///
/// kube's default climbs to 30 s (plus jitter) and stays there until two quiet minutes pass. After
/// a 30 s apiserver outage that left the operator blind for up to ~47 s once the apiserver was
/// back: resumed watches end in `410 Gone` (the restarted apiserver's watch cache starts afresh)
/// and back off once more before relisting, and the Controller backs off all its triggers
/// together whenever one of its watches fails. A watch retry is one cheap request. The first
/// retry is immediate: the usual first error is a `410 Gone` that only asks for a relist (a
/// watch of a CRD created a moment ago often gets one), and bundles may be waiting on it.
#[derive(Default)]
pub(super) struct WatchBackoff(Option<Duration>);

impl WatchBackoff {
    const SECOND: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.0.unwrap_or(Duration::ZERO);
        self.0 = Some(self.0.map_or(Self::SECOND, |d| (d * 2).min(Self::MAX)));
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0 = None;
    }
}

/// Replaces a watch event's object by what the cache keeps of it.
pub(super) fn map_event<K, T>(event: watcher::Event<K>, f: impl Fn(K) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_stay_within_seconds_and_reset() {
        let mut b = WatchBackoff::default();
        let delays: Vec<u64> = b.by_ref().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [0, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::ZERO));
    }
}
