//! Reconnect delays: exponential, capped, with jitter.
//!
//! Jitter matters when a server restarts: without it every client of a node
//! would come back in the same millisecond, over and over.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// `jitter` is the fraction (0..=1) of each delay that is random: a delay
    /// is uniform in `[base * (1 - jitter), base]`.
    pub(crate) fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            jitter: unit(jitter),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `r` is a uniform random number in
    /// `[0, 1)` (a parameter so that tests can pin it).
    pub(crate) fn next_delay(&mut self, r: f64) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(32);
        let scaled = base.as_secs_f64() * (1.0 - self.jitter * unit(r));
        Duration::try_from_secs_f64(scaled).map_or(base, |d| d.min(base))
    }

    /// Called once a connection proved stable: the next failure starts small again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Clamps to `[0, 1]`; NaN (which would make `mul_f64` panic) becomes 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 5000 * MS, 0.0);
        let delays: Vec<_> = (0..10).map(|_| b.next_delay(0.7).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        b.reset();
        assert_eq!(b.next_delay(0.0), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut b = Backoff::new(100 * MS, 5000 * MS, 0.5);
        assert_eq!(b.next_delay(0.0), 100 * MS);
        assert_eq!(b.next_delay(0.999_999).as_millis(), 100); // 200 * (1 - 0.5)
        assert_eq!(b.next_delay(0.5), 300 * MS); // 400 * 0.75
    }

    #[test]
    fn never_panics_on_odd_input() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::ZERO, f64::NAN);
        for r in [f64::NAN, -1.0, 2.0, f64::INFINITY] {
            assert!(b.next_delay(r) <= Duration::from_secs(1));
        }
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, 1.0);
        for r in [0.3, 0.0, 0.999] {
            assert!(b.next_delay(r) > Duration::ZERO);
        }
    }
}
