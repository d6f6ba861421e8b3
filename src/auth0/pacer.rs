//! Pacing from Auth0's rate-limit headers. Auth0 limits the Management API per tenant with a token
//! bucket and reports it on every response: `X-RateLimit-Limit` (the bucket size),
//! `X-RateLimit-Remaining` (requests left now) and `X-RateLimit-Reset` (epoch seconds at which
//! the bucket is full again). While requests remain, they go at once; when the bucket is nearly
//! empty, requests are spread at the refill rate the headers imply; a 429 stops every request
//! until the reset. A request that would have to wait longer than its caller allows is refused
//! instead of queued. Pure bookkeeping (no clock of its own), so it is tested without sleeping.

use std::time::{Duration, Instant};

/// Requests kept in hand: below this many remaining, requests are spread out.
const RESERVE: u64 = 2;

/// What one response said about the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds from now until the bucket is full again.
    pub reset_in: Duration,
}

impl RateHeaders {
    /// Reads the three headers; `None` when any is missing or unreadable. `now_unix` is the
    /// current time in (fractional) epoch seconds.
    pub fn from_headers(h: &reqwest::header::HeaderMap, now_unix: f64) -> Option<RateHeaders> {
        let num = |name: &str| -> Option<u64> { h.get(name)?.to_str().ok()?.trim().parse().ok() };
        let reset = num("x-ratelimit-reset")? as f64;
        Some(RateHeaders {
            limit: num("x-ratelimit-limit")?,
            remaining: num("x-ratelimit-remaining")?,
            reset_in: Duration::from_secs_f64((reset - now_unix).clamp(0.0, 3600.0)),
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
        self.limit = Some(limit);
        self.remaining = h.remaining.saturating_sub(self.in_flight);
        self.reset_at = now + h.reset_in;
        // The bucket refills (limit - remaining) requests by the reset. Read the rate only
        // from a bucket at least half empty: near full, the reset's one-second resolution
        // swamps it.
        let missing = limit.saturating_sub(h.remaining);
        if missing * 2 >= limit || self.interval.is_zero() {
            self.interval = h.reset_in / missing.max(1) as u32;
        }
    }

    /// A 429: nothing goes before the reset. Returns how long the caller waits.
    pub fn rate_limited(
        &mut self,
        now: Instant,
        h: Option<RateHeaders>,
        fallback: Duration,
    ) -> Duration {
        self.observe(now, h);
        let wait = h
            .map(|h| h.reset_in)
            .unwrap_or(fallback)
            .max(Duration::from_millis(100));
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
        let wait = p.rate_limited(t, h(2, 0, 30_000), Duration::from_secs(1));
        assert_eq!(wait, Duration::from_secs(30));
        assert_eq!(
            p.reserve(t, Duration::from_secs(2)),
            Err(Duration::from_secs(30))
        );
        // A patient caller (an import) is given the slot at the reset.
        assert_eq!(
            p.reserve(t, Duration::from_secs(60)),
            Ok(t + Duration::from_secs(30))
        );
    }

    #[test]
    fn a_429_holds_every_request_until_the_reset() {
        let t = Instant::now();
        let mut p = Pacer::new(t);
        p.reserve(t, Duration::ZERO).unwrap();
        p.observe(t, h(50, 40, 1_000));
        p.reserve(t, Duration::ZERO).unwrap();
        let wait = p.rate_limited(t, h(50, 0, 3_000), Duration::from_secs(1));
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
            p.rate_limited(t, None, Duration::from_secs(1)),
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
}
