//! Time and identifiers, passed in as parameters so that everything that builds XML is
//! deterministic under test (golden fixtures use [`FixedClock`] and [`SequentialIds`]).

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant, for fixtures and tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Where SAML IDs and other unguessable tokens come from.
pub trait IdGen: Send + Sync {
    /// A SAML ID: an `xs:ID` (NCName), so it starts with `_`, followed by 160 random bits in hex.
    fn saml_id(&self) -> String;
}

/// Random IDs from the operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdGen for RandomIds {
    fn saml_id(&self) -> String {
        let bytes: [u8; 20] = rand::random();
        format!("_{}", hex::encode(bytes))
    }
}

/// Predictable IDs (`_{prefix}{n}`), for fixtures and tests only.
#[derive(Debug)]
pub struct SequentialIds {
    prefix: String,
    next: AtomicU64,
}

impl SequentialIds {
    pub fn new(prefix: &str) -> Self {
        SequentialIds {
            prefix: prefix.to_string(),
            next: AtomicU64::new(1),
        }
    }
}

impl IdGen for SequentialIds {
    fn saml_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("_{}{n:04}", self.prefix)
    }
}

/// A URL-safe random token of `bytes` random bytes (state, nonce, PKCE verifier, cookies).
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SAML's `xs:dateTime` as flexgate writes it: UTC, whole seconds, `Z`.
pub fn saml_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
