//! A private key in a token, signing through a bounded pool of logged-in sessions.
//!
//! Sessions are opened on demand up to the pool size and reused; a caller that finds them all busy
//! waits (it runs on a blocking thread). When a signature fails because the session, the login or
//! the token went away, the pool is dropped, the token found and logged into again, the key found
//! again, and the signature retried once.
//!
//! **Readiness costs the token at most one signature per [`HEALTH_TTL`].** Every signature's
//! outcome is remembered with its time; [`TokenKey::known_health`] answers from it without touching
//! the token, and [`TokenKey::health`] signs only when that outcome is older than `HEALTH_TTL` and
//! no other thread is checking (the others get the last outcome at once).
//!
//! **A refused PIN is not given to the token again.** After `C_Login` answers a PIN error
//! (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`, `CKR_PIN_EXPIRED`, …) that PIN is held back: no session
//! is opened and no `C_Login` made with it until `pin_retry` (at least [`MIN_PIN_RETRY`]) has passed;
//! a reload builds a new `TokenKey` and tries at once, and a different PIN (a rotated `pin-source`
//! file) is tried at once. Requests and probes meanwhile get the PIN error, so a token with a
//! retry counter is not locked by traffic.

use super::token::{self, KeyFacts};
use super::{needs_reopen, token_err, Pkcs11Error, Pkcs11Uri};
use crate::secret::Secret;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use openssl::pkey::{PKey, Public};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a signature waits for a free session.
const CHECKOUT_WAIT: Duration = Duration::from_secs(10);

/// How long the token's last outcome (a login's signature or a readiness check) stands for its
/// health: readiness makes at most one signature per this interval.
pub const HEALTH_TTL: Duration = Duration::from_secs(10);

/// The shortest wait before a PIN the token refused is given to it again.
pub const MIN_PIN_RETRY: Duration = Duration::from_secs(300);

/// What a readiness check signs.
const HEALTH_PROBE: &[u8] = b"flexgate readiness probe";

/// The token's last answer to a signature.
struct Status {
    at: Instant,
    result: Result<(), String>,
}

/// A PIN the token refused: not given to `C_Login` again before `until`.
struct PinHold {
    /// SHA-256 of the refused PIN (a different PIN is tried at once).
    pin: [u8; 32],
    until: Instant,
    token: String,
    reason: String,
}

impl PinHold {
    fn holds(&self, pin: &[u8; 32], now: Instant) -> bool {
        &self.pin == pin && now < self.until
    }
}

fn pin_digest(pin: Option<&Secret>) -> [u8; 32] {
    crate::digest::sha256(pin.map(Secret::expose).unwrap_or("").as_bytes())
}

/// Resets a flag when dropped (also when the holder unwinds).
struct Lowers<'a>(&'a AtomicBool);

impl Drop for Lowers<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// DER prefix of a SHA-256 DigestInfo (PKCS#1 v1.5, RFC 8017 §9.2).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// What the mechanism choice signs at start-up.
const PROBE: &[u8] = b"flexgate: which mechanism signs with this key";

fn mechanism(raw_rsa: bool) -> Mechanism<'static> {
    if raw_rsa {
        Mechanism::RsaPkcs
    } else {
        Mechanism::Sha256RsaPkcs
    }
}

/// What `C_Sign` is given: the SHA-256 DigestInfo for CKM_RSA_PKCS, the data itself for
/// CKM_SHA256_RSA_PKCS (the token hashes).
fn sign_input(raw_rsa: bool, data: &[u8]) -> Vec<u8> {
    if raw_rsa {
        let mut v = SHA256_DIGEST_INFO.to_vec();
        v.extend_from_slice(&crate::digest::sha256(data));
        v
    } else {
        data.to_vec()
    }
}

/// CKM_RSA_PKCS (`true`) or CKM_SHA256_RSA_PKCS (`false`). A token lists mechanisms per slot,
/// not per key, and some keys sign with one only (Google Cloud KMS makes a key for one
/// algorithm), so each listed mechanism is tried in that order with one signature of [`PROBE`],
/// checked against the public key; the first that verifies is used. A token that lists neither
/// is tried with both.
pub(crate) fn choose_mechanism(
    listed: &[MechanismType],
    public: &PKey<Public>,
    uri: &Pkcs11Uri,
    probe: impl Fn(bool) -> Result<Vec<u8>, cryptoki::error::Error>,
) -> Result<bool, Pkcs11Error> {
    let raw = listed.contains(&MechanismType::RSA_PKCS);
    let hashed = listed.contains(&MechanismType::SHA256_RSA_PKCS);
    let order: &[bool] = match (raw, hashed) {
        (true, false) => &[true],
        (false, true) => &[false],
        _ => &[true, false],
    };
    let mut tried = Vec::new();
    for &raw_rsa in order {
        let name = if raw_rsa {
            "CKM_RSA_PKCS"
        } else {
            "CKM_SHA256_RSA_PKCS"
        };
        match probe(raw_rsa) {
            Ok(sig) if verifies(public, &sig) => return Ok(raw_rsa),
            Ok(_) => tried.push(format!(
                "{name}: the signature does not verify with the key's public half"
            )),
            Err(e) => tried.push(format!("{name}: C_Sign: {e}")),
        }
    }
    Err(Pkcs11Error::Token(format!(
        "{} cannot make an RSASSA-PKCS1-v1_5 SHA-256 signature ({}); use an RSA signing key that allows CKM_RSA_PKCS or CKM_SHA256_RSA_PKCS (Google Cloud KMS: algorithm RSA_SIGN_PKCS1_2048_SHA256 or larger)",
        uri.key_name(),
        tried.join("; ")
    )))
}

fn verifies(public: &PKey<Public>, sig: &[u8]) -> bool {
    openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), public)
        .and_then(|mut v| v.verify_oneshot(sig, PROBE))
        .unwrap_or(false)
}

/// A pooled session. One opened before the module was initialised again is forgotten, not
/// closed: its handle number may belong to a new session by then.
struct Held {
    session: Option<Session>,
    epoch: u64,
}

impl Held {
    fn new(session: Session) -> Held {
        Held {
            session: Some(session),
            epoch: token::epoch(),
        }
    }
}

impl std::ops::Deref for Held {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Always Some until drop.
        self.session.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Held {
    /// Opened before the module was initialised again: not to be used or closed.
    fn stale(&self) -> bool {
        self.epoch != token::epoch()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _inside = token::enter();
        if self.stale() {
            std::mem::forget(self.session.take());
        } else {
            drop(self.session.take());
        }
    }
}

/// Where the key is now: changes when the token is found again.
struct Place {
    slot: Slot,
    key: ObjectHandle,
    /// Bumped on every re-open: sessions of an older generation are dropped, not reused.
    generation: u64,
    idle: Vec<Held>,
    /// Sessions open (idle or in use) of this generation.
    open: usize,
}

/// A signing key in a PKCS#11 token.
pub struct TokenKey {
    uri: Pkcs11Uri,
    ctx: Pkcs11,
    /// CKM_RSA_PKCS over a DigestInfo, or CKM_SHA256_RSA_PKCS ([`choose_mechanism`]).
    raw_rsa: bool,
    max_sessions: usize,
    place: Mutex<Place>,
    freed: Condvar,
    /// Serialises re-opening, so a burst of failures re-opens once.
    reopening: Mutex<()>,
    public: PKey<Public>,
    facts: KeyFacts,
    /// The last signature's outcome, for readiness.
    status: Mutex<Status>,
    /// A readiness check is signing now.
    checking: AtomicBool,
    pin_hold: Mutex<Option<PinHold>>,
    pin_retry: Duration,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("uri", &self.uri).finish()
    }
}

impl TokenKey {
    /// Opens the token, finds and checks the key (blocking).
    pub fn open(
        uri: Pkcs11Uri,
        max_sessions: usize,
        allow_extractable: bool,
    ) -> Result<TokenKey, Pkcs11Error> {
        let _inside = token::enter();
        let (ctx, slot, session) = token::open(&uri, false)?;
        let key = token::find_private_key(&session, &uri)?;
        let (facts, public) = token::read_key(&session, key, &uri)?;
        facts.check(&uri, allow_extractable)?;
        let public = public.ok_or_else(|| Pkcs11Error::Token(format!("the public half of {} cannot be read (neither CKA_MODULUS on the private key nor a public key with the same label/id)", uri.key_name())))?;
        let mechs = ctx.get_mechanism_list(slot).unwrap_or_default();
        let raw_rsa = choose_mechanism(&mechs, &public, &uri, |raw| {
            session.sign(&mechanism(raw), key, &sign_input(raw, PROBE))
        })?;
        Ok(TokenKey {
            uri,
            ctx,
            raw_rsa,
            max_sessions: max_sessions.max(1),
            place: Mutex::new(Place {
                slot,
                key,
                generation: 0,
                idle: vec![Held::new(session)],
                open: 1,
            }),
            freed: Condvar::new(),
            reopening: Mutex::new(()),
            public,
            facts,
            status: Mutex::new(Status {
                at: Instant::now(),
                result: Ok(()),
            }),
            checking: AtomicBool::new(false),
            pin_hold: Mutex::new(None),
            pin_retry: MIN_PIN_RETRY,
        })
    }

    /// How long a refused PIN is held back (`idp.pin_retry_secs`; never under [`MIN_PIN_RETRY`]).
    pub fn with_pin_retry(mut self, retry: Duration) -> TokenKey {
        self.pin_retry = retry.max(MIN_PIN_RETRY);
        self
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }
    pub fn public_key(&self) -> &PKey<Public> {
        &self.public
    }
    pub fn facts(&self) -> &KeyFacts {
        &self.facts
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (blocking; the same bytes openssl produces).
    pub fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let input = sign_input(self.raw_rsa, data);
        let result = match self.try_sign(&input) {
            Err(Fail::Reopen(generation, why)) => {
                tracing::warn!(key = %self.uri, error = %why, "PKCS#11 session lost; opening the token again");
                self.reopen(generation).and_then(|()| {
                    self.try_sign(&input).map_err(|f| match f {
                        Fail::Reopen(_, why) => Pkcs11Error::Token(format!(
                            "{why} (again after opening the token again)"
                        )),
                        Fail::Final(e) => e,
                    })
                })
            }
            Err(Fail::Final(e)) => Err(e),
            Ok(sig) => Ok(sig),
        };
        self.record(&result);
        result
    }

    /// Remembers a signature's outcome for readiness (all sessions busy says nothing about the
    /// token).
    fn record(&self, result: &Result<Vec<u8>, Pkcs11Error>) {
        let result = match result {
            Err(Pkcs11Error::Busy(_)) => return,
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        *self.status.lock() = Status {
            at: Instant::now(),
            result,
        };
    }

    /// The token's health without touching it, when known: the last outcome if younger than
    /// [`HEALTH_TTL`], or while another thread is checking. `None`: call [`TokenKey::health`].
    pub fn known_health(&self) -> Option<Result<(), String>> {
        let s = self.status.lock();
        (s.at.elapsed() < HEALTH_TTL || self.checking.load(Ordering::Acquire))
            .then(|| s.result.clone())
    }

    /// `Ok` when the token signs (blocking). At most one signature per [`HEALTH_TTL`] and one at a
    /// time: otherwise the last outcome, at once.
    pub fn health(&self) -> Result<(), String> {
        if let Some(known) = self.known_health() {
            return known;
        }
        if self.checking.swap(true, Ordering::AcqRel) {
            return self.status.lock().result.clone();
        }
        let _done = Lowers(&self.checking);
        // Another check may have ended between the two looks.
        {
            let s = self.status.lock();
            if s.at.elapsed() < HEALTH_TTL {
                return s.result.clone();
            }
        }
        self.sign_sha256(HEALTH_PROBE)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// A new logged-in session, unless the token refused this PIN and `pin_retry` has not passed.
    fn open_session(&self, slot: Slot) -> Result<Session, Pkcs11Error> {
        let pin = token::read_pin(&self.uri.pin)?;
        let digest = pin_digest(pin.as_ref());
        if let Some(h) = self.pin_hold.lock().as_ref() {
            if h.holds(&digest, Instant::now()) {
                return Err(Pkcs11Error::PinHeld {
                    token: h.token.clone(),
                    reason: h.reason.clone(),
                    retry_in_secs: h.until.saturating_duration_since(Instant::now()).as_secs(),
                });
            }
        }
        let opened = token::open_session_with(&self.ctx, slot, &self.uri, false, pin.as_ref());
        if let Err(Pkcs11Error::Pin { token, reason }) = &opened {
            self.hold_pin(digest, token, reason);
        }
        opened
    }

    fn hold_pin(&self, pin: [u8; 32], token: &str, reason: &str) {
        let held = Pkcs11Error::PinHeld {
            token: token.to_string(),
            reason: reason.to_string(),
            retry_in_secs: self.pin_retry.as_secs(),
        };
        tracing::error!(key = %self.uri, error = %held, fix = %held.fix(), "the token refused the PIN; it is not tried again until a reload or the back-off ends");
        *self.pin_hold.lock() = Some(PinHold {
            pin,
            until: Instant::now() + self.pin_retry,
            token: token.to_string(),
            reason: reason.to_string(),
        });
    }

    /// One attempt on a pooled session.
    fn try_sign(&self, input: &[u8]) -> Result<Vec<u8>, Fail> {
        let (session, key, generation) = self.checkout()?;
        let inside = token::enter();
        if session.stale() {
            // The module was initialised again since this session was opened.
            drop(inside);
            self.checkin(session, generation, true);
            return Err(Fail::Reopen(
                generation,
                "the module was initialised again".into(),
            ));
        }
        let out = session.sign(&mechanism(self.raw_rsa), key, input);
        let broken = matches!(&out, Err(e) if needs_reopen(e));
        self.checkin(session, generation, broken);
        out.map_err(|e| {
            if needs_reopen(&e) {
                Fail::Reopen(generation, format!("C_Sign: {e}"))
            } else {
                Fail::Final(token_err("C_Sign", e))
            }
        })
    }

    fn checkout(&self) -> Result<(Held, ObjectHandle, u64), Fail> {
        let mut p = self.place.lock();
        loop {
            if let Some(s) = p.idle.pop() {
                return Ok((s, p.key, p.generation));
            }
            if p.open < self.max_sessions {
                p.open += 1;
                let (slot, key, generation) = (p.slot, p.key, p.generation);
                drop(p);
                return match self.open_session(slot) {
                    Ok(s) => Ok((Held::new(s), key, generation)),
                    Err(e) => {
                        self.checkin_failed(generation);
                        Err(match e {
                            // Opening again would not help, and must not try the PIN again.
                            Pkcs11Error::Pin { .. } | Pkcs11Error::PinHeld { .. } => Fail::Final(e),
                            e => Fail::Reopen(generation, e.to_string()),
                        })
                    }
                };
            }
            if self.freed.wait_for(&mut p, CHECKOUT_WAIT).timed_out() {
                return Err(Fail::Final(Pkcs11Error::Busy(self.max_sessions)));
            }
        }
    }

    fn checkin(&self, session: Held, generation: u64, broken: bool) {
        let mut p = self.place.lock();
        if generation == p.generation {
            if broken {
                p.open -= 1;
            } else {
                p.idle.push(session);
            }
        }
        drop(p);
        self.freed.notify_one();
    }

    fn checkin_failed(&self, generation: u64) {
        let mut p = self.place.lock();
        if generation == p.generation {
            p.open -= 1;
        }
        drop(p);
        self.freed.notify_one();
    }

    /// Drops every session and finds the token, the login and the key again — unless another
    /// thread already did since `seen` failed.
    fn reopen(&self, seen: u64) -> Result<(), Pkcs11Error> {
        let _one = self.reopening.lock();
        if self.place.lock().generation != seen {
            return Ok(());
        }
        {
            let mut p = self.place.lock();
            p.generation += 1;
            p.idle.clear();
            p.open = 0;
        }
        self.freed.notify_all();
        let slot = match token::find_slot(&self.ctx, &self.uri) {
            Ok(slot) => slot,
            Err(_) => {
                // The module may know the token only after scanning again.
                token::reinitialize(&self.uri.module_path)?;
                token::find_slot(&self.ctx, &self.uri)?
            }
        };
        let session = self.open_session(slot)?;
        let _inside = token::enter();
        let key = token::find_private_key(&session, &self.uri)?;
        match token::public_key(&session, key) {
            Some(k) if k.public_eq(&self.public) => {}
            Some(_) => return Err(Pkcs11Error::Token(format!("{} in the token is now a different key than at start-up; restart flexgate (or reload) with the matching certificate", self.uri.key_name()))),
            None => {}
        }
        let mut p = self.place.lock();
        p.slot = slot;
        p.key = key;
        p.idle.push(Held::new(session));
        p.open = 1;
        drop(p);
        self.freed.notify_all();
        tracing::info!(key = %self.uri, "PKCS#11 token opened again");
        Ok(())
    }
}

/// How one attempt failed.
enum Fail {
    /// The session, login or token went away while in generation `.0`: open it again and retry.
    Reopen(u64, String),
    Final(Pkcs11Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Private;
    use openssl::rsa::Rsa;

    fn key() -> (PKey<Private>, PKey<Public>) {
        let rsa = Rsa::generate(2048).unwrap();
        let private = PKey::from_rsa(rsa).unwrap();
        let public = PKey::public_key_from_der(&private.public_key_to_der().unwrap()).unwrap();
        (private, public)
    }

    /// What a token whose key accepts only `accepts` answers.
    fn token(
        private: &PKey<Private>,
        accepts: Option<bool>,
    ) -> impl Fn(bool) -> Result<Vec<u8>, cryptoki::error::Error> + '_ {
        move |raw| {
            if accepts != Some(raw) {
                return Err(cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::KeyFunctionNotPermitted,
                    cryptoki::context::Function::Sign,
                ));
            }
            let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), private)
                .unwrap();
            Ok(s.sign_oneshot_to_vec(PROBE).unwrap())
        }
    }

    #[test]
    fn the_mechanism_is_the_one_the_key_signs_with() {
        let (private, public) = key();
        let uri =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?module-path=/m.so&pin-value=1").unwrap();
        let both = [MechanismType::RSA_PKCS, MechanismType::SHA256_RSA_PKCS];
        let choose = |listed: &[MechanismType], accepts| {
            choose_mechanism(listed, &public, &uri, token(&private, accepts))
        };
        assert!(choose(&both, Some(true)).unwrap());
        // Listed by the token, refused by this key: the other one.
        assert!(!choose(&both, Some(false)).unwrap());
        assert!(!choose(&[], Some(false)).unwrap());
        // Only what is listed is tried.
        assert!(choose(&[MechanismType::SHA256_RSA_PKCS], Some(true)).is_err());
        let e = choose(&both, None).unwrap_err().to_string();
        assert!(
            e.contains("CKM_RSA_PKCS: C_Sign") && e.contains("CKM_SHA256_RSA_PKCS: C_Sign"),
            "{e}"
        );
        // A signature from another key does not verify.
        let (other, _) = key();
        let e = choose_mechanism(&both, &public, &uri, token(&other, Some(true)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn a_refused_pin_is_held_until_the_back_off_ends_and_only_that_pin() {
        let refused = Secret::new("4711");
        let now = Instant::now();
        let hold = PinHold {
            pin: pin_digest(Some(&refused)),
            until: now + MIN_PIN_RETRY,
            token: "token=t".into(),
            reason: "PinIncorrect".into(),
        };
        assert!(hold.holds(&pin_digest(Some(&refused)), now));
        assert!(hold.holds(
            &pin_digest(Some(&refused)),
            now + MIN_PIN_RETRY - Duration::from_secs(1)
        ));
        assert!(!hold.holds(&pin_digest(Some(&refused)), now + MIN_PIN_RETRY));
        // A different PIN (a rotated pin-source file) is not held.
        assert!(!hold.holds(&pin_digest(Some(&Secret::new("4712"))), now));
    }
}
