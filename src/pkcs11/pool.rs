//! A private key in a token, signing through a bounded pool of logged-in sessions.
//!
//! Sessions are opened on demand up to the pool size and reused; a caller that finds them all busy
//! waits (it runs on a blocking thread). When a signature fails because the session, the login or
//! the token went away, the pool is dropped, the token found and logged into again, the key found
//! again, and the signature retried once.

use super::token::{self, KeyFacts};
use super::{needs_reopen, token_err, Pkcs11Error, Pkcs11Uri};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use openssl::pkey::{PKey, Public};
use parking_lot::{Condvar, Mutex};
use std::time::Duration;

/// How long a signature waits for a free session.
const CHECKOUT_WAIT: Duration = Duration::from_secs(10);

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
        v.extend_from_slice(&openssl::sha::sha256(data));
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

impl Drop for Held {
    fn drop(&mut self) {
        if self.epoch != token::epoch() {
            std::mem::forget(self.session.take());
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
        })
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
        result
    }

    /// `Ok` when the token signs now (blocking: one signature, which also re-opens the token if
    /// it went away).
    pub fn health(&self) -> Result<(), String> {
        self.sign_sha256(b"flexgate readiness probe")
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// One attempt on a pooled session.
    fn try_sign(&self, input: &[u8]) -> Result<Vec<u8>, Fail> {
        let (session, key, generation) = self.checkout()?;
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
                return match token::open_session(&self.ctx, slot, &self.uri, false) {
                    Ok(s) => Ok((Held::new(s), key, generation)),
                    Err(e) => {
                        self.checkin_failed(generation);
                        Err(Fail::Reopen(generation, e.to_string()))
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
        let session = token::open_session(&self.ctx, slot, &self.uri, false)?;
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
}
