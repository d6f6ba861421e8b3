//! Pacing from Auth0's rate-limit headers. Auth0 limits the Management API per tenant with a token
//! bucket and reports it on every response: `X-RateLimit-Limit` (the bucket size),
//! `X-RateLimit-Remaining` (requests left now) and `X-RateLimit-Reset` (epoch seconds at which
//! the bucket is full again). While requests remain, they go at once; when the bucket is nearly
//! empty, requests are spread at the refill rate the headers imply; a 429 stops every request
//! until the reset. A request that would have to wait longer than its caller allows is refused
//! instead of queued. Pure bookkeeping (no clock of its own), so it is tested without sleeping.
//!
//! The headers come from the tenant, or from a proxy in between: every value is taken as hostile.
//! No value panics or overflows (a limit of 0 or of 2^32, a remaining above the limit, a reset in
//! the past or hours ahead), and no value holds requests for longer than [`MAX_HOLD`] (and a 429
//! no longer than the patience of the caller who saw it): then one request probes again.

use std::time::{Duration, Instant};

/// Requests kept in hand: below this many remaining, requests are spread out.
const RESERVE: u64 = 2;

/// The longest any header holds requests back: a 429's hold, the time to the reset, the gap
/// between spread-out requests. Auth0's tenant bucket refills a request within a second and is
/// full again within seconds; a `Reset` further ahead (a proxy, a daily quota, a broken clock) is
/// probed again after this, at the cost of one more 429.
pub const MAX_HOLD: Duration = Duration::from_secs(10);

/// The shortest a 429 holds requests back.
const MIN_HOLD: Duration = Duration::from_millis(100);

/// What one response said about the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds from now until the bucket is full again.
    pub reset_in: Duration,
}

impl RateHeaders {
    /// Reads the three headers; `None` when any is missing or not a whole number (a negative
    /// or fractional value included). `now_unix` is the current time in (fractional) epoch
    /// seconds. A reset in the past is now; one further ahead than [`MAX_HOLD`] is `MAX_HOLD`.
    pub fn from_headers(h: &reqwest::header::HeaderMap, now_unix: f64) -> Option<RateHeaders> {
        let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
        let reset = num("x-ratelimit-reset")? as f64;
        let secs = (reset - now_unix).clamp(0.0, MAX_HOLD.as_secs_f64());
        Some(RateHeaders {
            limit: num("x-ratelimit-limit")?,
            remaining: num("x-ratelimit-remaining")?,
            // `secs` is finite and in range (both operands are finite); ZERO if ever not.
            reset_in: Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO),
        })
    }
}

/// The shared pacing state of one tenant.
#[derive(Debug)]
pub struct Pacer {
    limit: Option<u64>,
    remaining: u64,
    reset_at: Instant,
    /// The gap between two requests when the bucket is nearly empty (the refill rate).
    interval: Duration,
    /// When the bucket is nearly empty, the next request starts no earlier than this.
    next_at: Instant,
    /// After a 429, no request starts before this.
    hold_until: Instant,
    in_flight: u64,
}

impl Pacer {
    pub fn new(now: Instant) -> Self {
        Pacer {
            limit: None,
            remaining: 0,
            reset_at: now,
            interval: Duration::ZERO,
            next_at: now,
            hold_until: now,
            in_flight: 0,
        }
    }

    /// When the next request may start. `Err(wait)` when that is more than `max_wait` away
    /// (nothing is reserved then).
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Result<Instant, Duration> {
        if let Some(limit) = self.limit.filter(|_| now >= self.reset_at) {
            self.remaining = limit;
        }
        let in_hand = self.limit.is_none() || self.remaining > RESERVE;
        let at = if in_hand {
            now.max(self.hold_until)
        } else {
            now.max(self.hold_until).max(self.next_at)
        };
        if at - now > max_wait {
            return Err(at - now);
        }
        if !in_hand {
            self.next_at = at + self.interval;
        }
        self.remaining = self.remaining.saturating_sub(1);
        self.in_flight += 1;
        Ok(at)
    }

    /// Records the headers of a response to a reserved request (`None`: none were sent).
    pub fn observe(&mut self, now: Instant, h: Option<RateHeaders>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(h) = h else { return };
        let limit = h.limit.max(1);
        let remaining = h.remaining.min(limit);
        let reset_in = h.reset_in.min(MAX_HOLD);
        self.limit = Some(limit);
        self.remaining = remaining.saturating_sub(self.in_flight);
        self.reset_at = now + reset_in;
        // The bucket refills (limit - remaining) requests by the reset. Read the rate only
        // from a bucket at least half empty (missing ≥ limit - missing, without overflow): near
        // full, the reset's one-second resolution swamps it.
        let missing = limit - remaining;
        if missing >= limit - missing || self.interval.is_zero() {
            self.interval = reset_in / u32::try_from(missing.max(1)).unwrap_or(u32::MAX);
        }
    }

    /// A 429: nothing goes before the reset, or before `cap` (the patience of the caller who saw
    /// it) or [`MAX_HOLD`] when that is sooner; then the next request probes. Returns how long
    /// the caller waits.
    pub fn rate_limited(
        &mut self,
        now: Instant,
        h: Option<RateHeaders>,
        fallback: Duration,
        cap: Duration,
    ) -> Duration {
        self.observe(now, h);
        let wait = h
            .map(|h| h.reset_in)
            .unwrap_or(fallback)
            .min(cap.min(MAX_HOLD))
            .max(MIN_HOLD);
        self.remaining = 0;
        self.hold_until = self.hold_until.max(now + wait);
        self.reset_at = self.reset_at.max(now + wait);
        wait
    }

    /// Gives back a reservation whose request was never answered (network error).
    pub fn cancel(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(limit: u64, remaining: u64, reset_ms: u64) -> Option<RateHeaders> {
        Some(RateHeaders {
            limit,
            remaining,
            reset_in: Duration::from_millis(reset_ms),
        })
    }

    #[test]
    fn without_headers_nothing_waits() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        for _ in 0..100 {
            assert_eq!(p.reserve(t, Duration::ZERO), Ok(t));
            p.observe(t, None);
        }
    }

    #[test]
    fn a_full_bucket_goes_at_once_then_requests_are_spread_at_the_refill_rate() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        // 16/s with a burst of 10: 10 left, full again at once.
        p.observe(t, h(10, 9, 0));
        let mut at = Vec::new();
        for _ in 0..7 {
            at.push(p.reserve(t, Duration::from_secs(10)).unwrap());
        }
        assert!(at.iter().all(|a| *a == t), "requests in hand go at once");
        // An answer says 2 left, full in 500 ms (8 missing): one request every 62.5 ms.
        p.observe(t, h(10, 2, 500));
        let a = p.reserve(t, Duration::from_secs(10)).unwrap();
        let b = p.reserve(t, Duration::from_secs(10)).unwrap();
        let c = p.reserve(t, Duration::from_secs(10)).unwrap();
        assert_eq!(a, t);
        assert_eq!(b - a, Duration::from_micros(62_500));
        assert_eq!(c - b, Duration::from_micros(62_500));
    }

    #[test]
    fn a_refilled_bucket_ends_the_spreading() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        p.observe(t, h(50, 0, 3_000));
        let a = p.reserve(t, Duration::from_secs(10)).unwrap();
        let b = p.reserve(t, Duration::from_secs(10)).unwrap();
        assert_eq!(b - a, Duration::from_millis(60));
        // The bucket refilled faster than requests went: they go at once again, and a nearly
        // full bucket (reset within a second) does not slow them down.
        p.observe(t, h(50, 45, 1_000));
        assert_eq!(p.reserve(t, Duration::ZERO), Ok(t));
        assert_eq!(p.reserve(t, Duration::ZERO), Ok(t));
    }

    #[test]
    fn a_wait_longer_than_the_caller_allows_is_refused_without_reserving() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        let wait = p.rate_limited(t, h(2, 0, 8_000), SEC, Duration::from_secs(60));
        assert_eq!(wait, Duration::from_secs(8));
        assert_eq!(
            p.reserve(t, Duration::from_secs(2)),
            Err(Duration::from_secs(8))
        );
        // A patient caller (an import) is given the slot at the reset.
        assert_eq!(
            p.reserve(t, Duration::from_secs(60)),
            Ok(t + Duration::from_secs(8))
        );
    }

    const SEC: Duration = Duration::from_secs(1);

    /// Every hostile value of one header, with the others sane.
    fn hostile() -> Vec<RateHeaders> {
        let mut v = Vec::new();
        for limit in [0, 1, 1 << 32, 3 << 32, u64::MAX / 2 + 1, u64::MAX] {
            for remaining in [0, 1, 1 << 32, u64::MAX] {
                for reset_in in [Duration::ZERO, Duration::from_secs(3600), Duration::MAX] {
                    v.push(RateHeaders {
                        limit,
                        remaining,
                        reset_in,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn no_header_value_panics_or_holds_requests_past_the_cap() {
        for hh in hostile() {
            let t = Instant::now();
            let mut p = Pacer::new(t);
            p.reserve(t, Duration::ZERO).unwrap();
            p.observe(t, Some(hh));
            // Spread-out requests: never a gap beyond the cap, however many are queued.
            let mut last = t;
            for _ in 0..5 {
                let at = p.reserve(t, Duration::from_secs(3600)).unwrap();
                assert!(at - last <= MAX_HOLD, "{hh:?}: gap {:?}", at - last);
                last = at;
            }
            // A 429 with the same headers holds no longer than the cap.
            let wait = p.rate_limited(t, Some(hh), SEC, Duration::from_secs(3600));
            assert!(wait <= MAX_HOLD, "{hh:?}: {wait:?}");
        }
    }

    #[test]
    fn a_429_with_a_far_reset_holds_for_the_cap_then_one_request_probes_again() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        // A proxy's 429 says "full again in an hour".
        let wait = p.rate_limited(t, h(50, 0, 3_600_000), SEC, Duration::from_secs(120));
        assert_eq!(wait, MAX_HOLD);
        // A bulk caller (60 s) is given a slot at the cap, not in an hour.
        let probe = p.reserve(t, Duration::from_secs(60)).unwrap();
        assert_eq!(probe, t + MAX_HOLD);
        // A login (2 s) is refused at once rather than kept waiting; the next slot is spread
        // after the probe at the rate the (capped) reset implies.
        assert_eq!(
            p.reserve(t, Duration::from_secs(2)),
            Err(MAX_HOLD + MAX_HOLD / 50)
        );
        // After the cap a login goes too.
        let later = t + MAX_HOLD + SEC;
        p.observe(later, None);
        assert!(p.reserve(later, Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn a_429_seen_by_a_login_holds_the_others_no_longer_than_its_patience() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        let login = Duration::from_secs(2);
        let wait = p.rate_limited(t, h(50, 0, 3_600_000), SEC, login);
        assert_eq!(wait, login);
        assert_eq!(p.reserve(t, login), Ok(t + login));
    }

    #[test]
    fn a_429_holds_every_request_until_the_reset() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        p.observe(t, h(50, 40, 1_000));
        p.reserve(t, Duration::ZERO).unwrap();
        let wait = p.rate_limited(t, h(50, 0, 3_000), SEC, Duration::from_secs(60));
        assert_eq!(wait, Duration::from_secs(3));
        let next = p.reserve(t, Duration::from_secs(10)).unwrap();
        assert_eq!(next, t + Duration::from_secs(3));
        // After the reset the bucket is full again: requests go at once.
        let later = t + Duration::from_secs(4);
        p.observe(later, None);
        assert_eq!(p.reserve(later, Duration::ZERO), Ok(later));
    }

    #[test]
    fn a_429_without_headers_waits_the_fallback() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        assert_eq!(
            p.rate_limited(t, None, SEC, Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(p.reserve(t, Duration::ZERO), Err(Duration::from_secs(1)));
    }

    #[test]
    fn headers_are_read_from_a_response() {
        let mut m = reqwest::header::HeaderMap::new();
        m.insert("x-ratelimit-limit", "16".parse().unwrap());
        m.insert("x-ratelimit-remaining", "3".parse().unwrap());
        m.insert("x-ratelimit-reset", "1000002".parse().unwrap());
        let r = RateHeaders::from_headers(&m, 1_000_000.5).unwrap();
        assert_eq!((r.limit, r.remaining), (16, 3));
        assert_eq!(r.reset_in, Duration::from_millis(1500));
        m.remove("x-ratelimit-reset");
        assert_eq!(RateHeaders::from_headers(&m, 0.0), None);
    }

    #[test]
    fn hostile_header_text_is_read_as_missing_or_capped() {
        let read = |limit: &str, remaining: &str, reset: &str, now: f64| {
            let mut m = reqwest::header::HeaderMap::new();
            m.insert("x-ratelimit-limit", limit.parse().unwrap());
            m.insert("x-ratelimit-remaining", remaining.parse().unwrap());
            m.insert("x-ratelimit-reset", reset.parse().unwrap());
            RateHeaders::from_headers(&m, now)
        };
        // Negative, fractional, garbled, beyond u64: not read.
        for bad in [
            "-5",
            "1.5",
            "soon",
            "",
            "18446744073709551616",
            "NaN",
            "inf",
        ] {
            assert_eq!(read("10", "1", bad, 0.0), None, "reset {bad:?}");
            assert_eq!(read(bad, "1", "5", 0.0), None, "limit {bad:?}");
            assert_eq!(read("10", bad, "5", 0.0), None, "remaining {bad:?}");
        }
        // A reset in the past is now; one hours or eons ahead is the cap; a clock of 0 too.
        let r = |reset: &str, now: f64| read("10", "0", reset, now).map(|h| h.reset_in);
        assert_eq!(r("100", 1_000.0), Some(Duration::ZERO));
        assert_eq!(r("4600", 1_000.0), Some(MAX_HOLD));
        assert_eq!(r("18446744073709551615", 0.0), Some(MAX_HOLD));
        assert_eq!(r("0", f64::MAX), Some(Duration::ZERO));
    }
}
