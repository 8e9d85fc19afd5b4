//! The one retry policy: exponential backoff with full jitter, capped.
//!
//! Every place that asks again after a failure waits [`Backoff::delay`] (or keeps a
//! [`Retry`] that counts the failures for it): the slave's announces and heartbeats, its
//! replication of a pack, the client's requests to a slave that did not answer, `hummel
//! build --wait` polling a master it lost. A server that says when to come back
//! (`Retry-After`) is asked again after that wait plus a random part of it ([`after`]), so
//! the callers it turned away do not return at the same instant.
//!
//! Full jitter (the delay is uniform between the floor and the exponential ceiling, not the
//! ceiling itself) spreads callers that failed together: a restarted master does not get every
//! slave's complete hashlist in the same second. The ceiling grows from `first`, doubling per
//! failure, to `max`; the floor keeps a retry from being immediate where that matters.
//!
//! Written here rather than taken from a crate: the retry sites are schedulers that compute a
//! deadline (the slave's event loop, the replication queue, the fetch engine), not closures to
//! call again, which is what `backon` and `backoff` wrap; the policy is a few lines over `rand`.

use std::time::Duration;

/// Exponential backoff with full jitter: the `n`-th retry (from 0) waits a uniform random time
/// in `[floor, min(max, first * 2^n)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    floor: Duration,
}

impl Backoff {
    /// Ceilings from `first`, doubling per failure, capped at `max` (at least `first`); no
    /// floor (full jitter: a delay may be close to zero).
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        let max = if max.as_nanos() < first.as_nanos() {
            first
        } else {
            max
        };
        Backoff {
            first,
            max,
            floor: Duration::ZERO,
        }
    }

    /// No delay shorter than `floor` (at most the cap).
    pub const fn with_floor(self, floor: Duration) -> Backoff {
        let floor = if floor.as_nanos() > self.max.as_nanos() {
            self.max
        } else {
            floor
        };
        Backoff { floor, ..self }
    }

    /// The longest delay of retry `n` (from 0): `first * 2^n`, capped, never below the floor.
    pub fn ceiling(&self, n: u32) -> Duration {
        let grown = self.first.saturating_mul(1u32 << n.min(31));
        grown.min(self.max).max(self.floor)
    }

    /// The delay of retry `n` (from 0): uniform in `[floor, ceiling(n)]`.
    pub fn delay(&self, n: u32) -> Duration {
        self.delay_at(n, rand::random::<f64>())
    }

    /// The delay of retry `n` for the random fraction `unit` (in `[0, 1]`; clamped): `floor +
    /// unit * (ceiling - floor)`. [`Backoff::delay`] draws `unit`; tests pass it.
    pub fn delay_at(&self, n: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(n);
        let span = ceiling.saturating_sub(self.floor);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.floor + span.mul_f64(unit)
    }

    /// The cap on every delay.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// A [`Backoff`] and the failures since the last success: what one retry site keeps.
#[derive(Clone, Debug)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
}

impl Retry {
    /// No failure yet.
    pub const fn new(policy: Backoff) -> Retry {
        Retry {
            policy,
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let d = self.policy.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// A success: the next failure starts from the first delay again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A server's `Retry-After` wait plus up to a quarter of it more (at least up to 100 ms more),
/// drawn at random: never earlier than the server asked, and callers it turned away at the same
/// moment come back spread out.
pub fn after(wait: Duration) -> Duration {
    after_at(wait, rand::random::<f64>())
}

/// [`after`] for the random fraction `unit` (in `[0, 1]`, clamped).
pub fn after_at(wait: Duration, unit: f64) -> Duration {
    let spread = (wait / 4).max(Duration::from_millis(100));
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        1.0
    };
    wait + spread.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_from_the_first_delay_up_to_the_cap() {
        let b = Backoff::new(200 * MS, 5000 * MS);
        let ceilings: Vec<u128> = (0..8).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // Any number of failures: capped, no overflow.
        assert_eq!(b.ceiling(u32::MAX), 5000 * MS);
        assert_eq!(b.max(), 5000 * MS);
        // A cap below the first delay is the first delay.
        assert_eq!(Backoff::new(MS * 10, MS).ceiling(3), MS * 10);
    }

    #[test]
    fn a_delay_is_anywhere_between_the_floor_and_the_ceiling() {
        let b = Backoff::new(200 * MS, 5000 * MS);
        assert_eq!(
            b.delay_at(0, 0.0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        assert_eq!(b.delay_at(0, 1.0), 200 * MS);
        assert_eq!(b.delay_at(3, 0.5), 800 * MS);
        assert_eq!(b.delay_at(9, 1.0), 5000 * MS);
        // Out-of-range fractions are clamped.
        assert_eq!(b.delay_at(1, 7.0), 400 * MS);
        assert_eq!(b.delay_at(1, -1.0), Duration::ZERO);
        assert_eq!(b.delay_at(1, f64::NAN), 400 * MS);

        let floored = Backoff::new(MS * 1000, MS * 30_000).with_floor(MS * 15_000);
        assert_eq!(floored.delay_at(0, 0.0), MS * 15_000);
        assert_eq!(
            floored.delay_at(0, 1.0),
            MS * 15_000,
            "ceiling below the floor"
        );
        assert_eq!(floored.delay_at(9, 0.5), MS * 22_500);
        assert_eq!(floored.delay_at(9, 1.0), MS * 30_000);
        // A floor above the cap is the cap.
        assert_eq!(
            Backoff::new(MS, MS * 2).with_floor(MS * 9).delay_at(0, 0.0),
            MS * 2
        );
    }

    #[test]
    fn drawn_delays_stay_in_bounds_and_spread_over_the_range() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        for n in [0, 2, 10] {
            let ceiling = b.ceiling(n);
            let draws: Vec<Duration> = (0..2000).map(|_| b.delay(n)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {n}");
            let low = draws.iter().filter(|d| **d < ceiling / 4).count();
            let high = draws.iter().filter(|d| **d > ceiling * 3 / 4).count();
            // Uniform: about 500 each; a fixed delay would give 0 or 2000.
            assert!((300..700).contains(&low), "retry {n}: {low} low");
            assert!((300..700).contains(&high), "retry {n}: {high} high");
        }
    }

    #[test]
    fn a_retry_counts_failures_and_starts_over_after_a_success() {
        let mut r = Retry::new(Backoff::new(100 * MS, 1000 * MS));
        assert!(r.failed() <= 100 * MS);
        assert!(r.failed() <= 200 * MS);
        assert!(r.failed() <= 400 * MS);
        assert_eq!(r.failures(), 3);
        r.succeeded();
        assert_eq!(r.failures(), 0);
        assert!(r.failed() <= 100 * MS);
    }

    #[test]
    fn a_retry_after_is_never_shortened_and_spread_by_a_quarter() {
        let s = Duration::from_secs(1);
        assert_eq!(after_at(s, 0.0), s);
        assert_eq!(after_at(s, 1.0), s + s / 4);
        assert_eq!(after_at(Duration::ZERO, 1.0), 100 * MS);
        assert_eq!(after_at(s * 8, 0.5), s * 9);
        for _ in 0..1000 {
            let d = after(s);
            assert!(d >= s && d <= s + s / 4, "{d:?}");
        }
    }
}
