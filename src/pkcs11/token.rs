//! Reaching a token: the module (loaded and initialised once per process), the slot, the login,
//! and the key's attributes.
//!
//! **No `C_Finalize` while another thread is inside the module.** A token that went away is found
//! again only after the module scans anew, which takes `C_Finalize` + `C_Initialize`
//! ([`reinitialize`]). Every other call into a module happens under [`enter`], a shared guard;
//! `reinitialize` takes the same lock exclusively, so it waits until every thread has left the
//! module (signatures, session opens and closes, logins, look-ups) and no thread enters until it is
//! done. Sessions opened before belong to the finished module: they carry the module [`epoch`] and
//! are forgotten, never used or closed, afterwards. The shared guard is taken recursively (a
//! session closed while its owner is inside the module does not deadlock), so under a constant
//! overlap of signatures a re-initialisation can wait; it runs only while the token is unusable,
//! when signatures fail fast.

use super::uri::{PinSpec, Pkcs11Uri, TokenMatch};
use super::Pkcs11Error;
use crate::secret::Secret;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// PKCS#11 allows one `C_Initialize` per module and process: modules stay loaded for the
/// process's life and are shared by every key (and by a reload).
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Bumped whenever a module is initialised again: sessions opened before belong to a finished
/// module and must be forgotten, not closed (their handle numbers may name new sessions).
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Held (shared) by every thread inside a module; held exclusively by [`reinitialize`].
static INSIDE: RwLock<()> = RwLock::new(());

/// The current module epoch (see [`reinitialize`]).
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// Held while calling into a module: [`reinitialize`] waits until no thread holds it.
pub fn enter() -> RwLockReadGuard<'static, ()> {
    INSIDE.read_recursive()
}

/// Finalises and initialises the module at `path` again, so it scans its tokens anew (a token
/// that went away and came back is found only then). Every session of the module ends. Waits
/// until no other thread is inside a module; the caller must not hold [`enter`].
pub fn reinitialize(path: &Path) -> Result<(), Pkcs11Error> {
    let _alone = INSIDE.write();
    let modules = MODULES.get_or_init(Default::default).lock();
    let Some(ctx) = modules.get(path) else {
        return Ok(());
    };
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let _ = ctx.clone().finalize();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| Pkcs11Error::Module {
            path: path.display().to_string(),
            reason: format!("C_Initialize failed after the token went away: {e}"),
        })
}

/// The module at `path`, loaded and initialised (for use from several threads) on first use.
pub fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let mut modules = MODULES.get_or_init(Default::default).lock();
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let fail = |reason: String| Pkcs11Error::Module {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("there is no such file".into()));
    }
    let ctx = Pkcs11::new(path).map_err(|e| fail(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(format!("C_Initialize failed: {e}"))),
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn matches(m: &TokenMatch, slot: Slot, info: &cryptoki::slot::TokenInfo) -> bool {
    let eq =
        |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have.trim_end());
    m.slot_id.is_none_or(|id| id == slot.id())
        && eq(&m.token, info.label())
        && eq(&m.manufacturer, info.manufacturer_id())
        && eq(&m.serial, info.serial_number())
        && eq(&m.model, info.model())
}

/// The one slot whose token matches the URI.
pub fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, Pkcs11Error> {
    let _inside = enter();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| super::token_err("C_GetSlotList", e))?;
    let mut present = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        // A token that fails to answer (e.g. its storage vanished) does not hide the others.
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        present.push(format!(
            "{:?} in slot {}",
            info.label().trim_end(),
            slot.id()
        ));
        if matches(&uri.token, slot, &info) {
            found.push(slot);
        }
    }
    let present = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::NoToken {
            wanted: uri.token_name(),
            present,
        }),
        _ => Err(Pkcs11Error::AmbiguousToken {
            wanted: uri.token_name(),
            present,
        }),
    }
}

/// The PIN the URI names (read from its file each time, so a rotated PIN file is picked up).
pub fn read_pin(pin: &PinSpec) -> Result<Option<Secret>, Pkcs11Error> {
    match pin {
        PinSpec::None => Ok(None),
        PinSpec::Value(s) => Ok(Some(s.clone())),
        PinSpec::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Pkcs11Error::PinFile {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok(Some(Secret::new(text.lines().next().unwrap_or(""))))
        }
    }
}

/// Logs the user in unless the session already is (login state is shared by the application's
/// sessions on one token).
pub fn login(session: &Session, pin: Option<&AuthPin>, token: &str) -> Result<(), Pkcs11Error> {
    if let Ok(info) = session.get_session_info() {
        if matches!(
            info.session_state(),
            SessionState::RoUser | SessionState::RwUser
        ) {
            return Ok(());
        }
    }
    match session.login(UserType::User, pin) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(
            rv @ (RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized),
            _,
        )) => Err(Pkcs11Error::Pin {
            token: token.to_string(),
            reason: format!("{rv:?}"),
        }),
        Err(CkError::PinNotSet) => Err(Pkcs11Error::Pin {
            token: token.to_string(),
            reason: "the URI gives no PIN and the token needs one".into(),
        }),
        Err(e) => Err(super::token_err("C_Login", e)),
    }
}

/// Loads the module, finds the token and opens a logged-in session.
pub fn open(uri: &Pkcs11Uri, read_write: bool) -> Result<(Pkcs11, Slot, Session), Pkcs11Error> {
    let _inside = enter();
    let ctx = module(&uri.module_path)?;
    let slot = find_slot(&ctx, uri)?;
    let session = open_session(&ctx, slot, uri, read_write)?;
    Ok((ctx, slot, session))
}

/// A new session on `slot`, logged in with the URI's PIN.
pub fn open_session(
    ctx: &Pkcs11,
    slot: Slot,
    uri: &Pkcs11Uri,
    read_write: bool,
) -> Result<Session, Pkcs11Error> {
    let pin = read_pin(&uri.pin)?;
    open_session_with(ctx, slot, uri, read_write, pin.as_ref())
}

/// A new session on `slot`, logged in with `pin` (`C_Login` only if the token's login state is
/// not "logged in" already).
pub fn open_session_with(
    ctx: &Pkcs11,
    slot: Slot,
    uri: &Pkcs11Uri,
    read_write: bool,
    pin: Option<&Secret>,
) -> Result<Session, Pkcs11Error> {
    let _inside = enter();
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| super::token_err("C_OpenSession", e))?;
    let pin = pin.map(|p| AuthPin::from(p.expose().to_string()));
    login(&session, pin.as_ref(), &uri.token_name())?;
    Ok(session)
}

/// The template that finds the URI's objects of `class`.
pub fn template(uri: &Pkcs11Uri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(o) = &uri.object {
        t.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

/// The one private key the URI names.
pub fn find_private_key(session: &Session, uri: &Pkcs11Uri) -> Result<ObjectHandle, Pkcs11Error> {
    let found = session
        .find_objects(&template(uri, ObjectClass::PRIVATE_KEY))
        .map_err(|e| super::token_err("C_FindObjects", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::NoKey {
            token: uri.token_name(),
            key: uri.key_name(),
        }),
        many => Err(Pkcs11Error::AmbiguousKey {
            token: uri.token_name(),
            key: uri.key_name(),
            count: many.len(),
        }),
    }
}

/// What `flexgate check` reports about a key, and what start-up checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyFacts {
    pub rsa: bool,
    pub bits: usize,
    pub sensitive: bool,
    pub extractable: bool,
    pub sign: bool,
    pub always_authenticate: bool,
    pub token_object: bool,
    pub private_object: bool,
}

impl KeyFacts {
    /// Refuses a key flexgate must not sign with.
    pub fn check(&self, uri: &Pkcs11Uri, allow_extractable: bool) -> Result<(), Pkcs11Error> {
        let key = uri.key_name();
        if !self.rsa {
            return Err(Pkcs11Error::NotRsa { key });
        }
        if self.bits < 2048 {
            return Err(Pkcs11Error::Weak {
                key,
                bits: self.bits,
            });
        }
        if !self.sign {
            return Err(Pkcs11Error::CannotSign { key });
        }
        if self.always_authenticate {
            return Err(Pkcs11Error::AlwaysAuthenticate { key });
        }
        if (self.extractable || !self.sensitive) && !allow_extractable {
            return Err(Pkcs11Error::Extractable { key });
        }
        Ok(())
    }

    /// One line for `flexgate check`.
    pub fn describe(&self) -> String {
        let flag = |b: bool| if b { "true" } else { "false" };
        format!(
            "{} {} bits; CKA_SENSITIVE {}, CKA_EXTRACTABLE {}, CKA_SIGN {}, CKA_TOKEN {}, CKA_PRIVATE {}",
            if self.rsa { "RSA" } else { "not RSA" },
            self.bits,
            flag(self.sensitive),
            flag(self.extractable),
            flag(self.sign),
            flag(self.token_object),
            flag(self.private_object)
        )
    }
}

const FACT_ATTRS: [AttributeType; 8] = [
    AttributeType::KeyType,
    AttributeType::Modulus,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::Sign,
    AttributeType::AlwaysAuthenticate,
    AttributeType::Token,
    AttributeType::Private,
];

/// Reads a private key's attributes and its public half (modulus and exponent, from the private
/// key object or else from the public key with the same label/id).
pub fn read_key(
    session: &Session,
    key: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<(KeyFacts, Option<PKey<Public>>), Pkcs11Error> {
    let attrs = session
        .get_attributes(key, &FACT_ATTRS)
        .map_err(|e| super::token_err("C_GetAttributeValue", e))?;
    let mut f = KeyFacts {
        rsa: false,
        bits: 0,
        sensitive: false,
        extractable: true,
        sign: false,
        always_authenticate: false,
        token_object: false,
        private_object: false,
    };
    for a in attrs {
        match a {
            Attribute::KeyType(t) => f.rsa = t == KeyType::RSA,
            Attribute::Modulus(m) => {
                f.bits = BigNum::from_slice(&m)
                    .map(|n| n.num_bits() as usize)
                    .unwrap_or(0)
            }
            Attribute::Sensitive(b) => f.sensitive = b,
            Attribute::Extractable(b) => f.extractable = b,
            Attribute::Sign(b) => f.sign = b,
            Attribute::AlwaysAuthenticate(b) => f.always_authenticate = b,
            Attribute::Token(b) => f.token_object = b,
            Attribute::Private(b) => f.private_object = b,
            _ => {}
        }
    }
    let public = if f.rsa {
        public_key(session, key).or_else(|| {
            let pubs = session
                .find_objects(&template(uri, ObjectClass::PUBLIC_KEY))
                .ok()?;
            match pubs.as_slice() {
                [one] => public_key(session, *one),
                _ => None,
            }
        })
    } else {
        None
    };
    Ok((f, public))
}

/// An object's RSA public key, when it shows CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub fn public_key(session: &Session, obj: ObjectHandle) -> Option<PKey<Public>> {
    let attrs = session
        .get_attributes(
            obj,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .ok()?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(m) => n = Some(BigNum::from_slice(&m).ok()?),
            Attribute::PublicExponent(x) => e = Some(BigNum::from_slice(&x).ok()?),
            _ => {}
        }
    }
    let rsa = Rsa::from_public_components(n?, e?).ok()?;
    PKey::from_rsa(rsa).ok()
}
