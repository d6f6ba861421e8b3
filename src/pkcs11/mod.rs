//! Signing keys kept in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library, SoftHSM2).
//!
//! `uri` parses the RFC 7512 key location, `token` finds the token, logs in and reads a key's
//! attributes, `pool` signs through a bounded pool of logged-in sessions that re-opens itself when
//! the token goes away, and `keygen` makes a key pair inside the token. Every PKCS#11 call is
//! blocking: callers run them on blocking threads, never on the async reactor.

pub mod keygen;
pub mod pool;
pub mod token;
pub mod uri;

pub use pool::TokenKey;
pub use uri::{PinSpec, Pkcs11Uri};

use cryptoki::error::{Error as CkError, RvError};

/// Why a token or a key in it cannot be used. Each message names the problem; [`Pkcs11Error::fix`]
/// names the fix.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("the PKCS#11 module {path} cannot be loaded: {reason}")]
    Module { path: String, reason: String },
    #[error("no token matches {wanted} (tokens present: {present})")]
    NoToken { wanted: String, present: String },
    #[error("several tokens match {wanted} ({present})")]
    AmbiguousToken { wanted: String, present: String },
    #[error("the token {token} refused the PIN ({reason})")]
    Pin { token: String, reason: String },
    #[error("the token {token} refused the PIN ({reason}); flexgate does not give it that PIN again for {retry_in_secs} s or until a reload (SIGHUP), so that the token does not lock it")]
    PinHeld {
        token: String,
        reason: String,
        retry_in_secs: u64,
    },
    #[error("the PIN file {path} cannot be read: {reason}")]
    PinFile { path: String, reason: String },
    #[error("the token {token} has no private key {key}")]
    NoKey { token: String, key: String },
    #[error("the token {token} has {count} private keys with {key}")]
    AmbiguousKey {
        token: String,
        key: String,
        count: usize,
    },
    #[error("the key {key} is not an RSA key")]
    NotRsa { key: String },
    #[error("the key {key} is RSA-{bits}; at least 2048 bits are needed")]
    Weak { key: String, bits: usize },
    #[error("the key {key} is extractable (CKA_EXTRACTABLE is true, or CKA_SENSITIVE is false): its private part can be read out of the token")]
    Extractable { key: String },
    #[error("the key {key} needs its PIN again for every signature (CKA_ALWAYS_AUTHENTICATE)")]
    AlwaysAuthenticate { key: String },
    #[error("the key {key} may not sign (CKA_SIGN is false)")]
    CannotSign { key: String },
    #[error("all {0} PKCS#11 sessions stayed busy")]
    Busy(usize),
    #[error("the token cannot be used: {0}")]
    Token(String),
    #[error("the token already holds objects with {key}")]
    LabelTaken { key: String },
    #[error("the certificate for the token's key cannot be made: {0}")]
    Certificate(#[from] openssl::error::ErrorStack),
}

impl Pkcs11Error {
    /// What an administrator should do about it.
    pub fn fix(&self) -> String {
        match self {
            Pkcs11Error::Module { .. } => "install the HSM vendor's PKCS#11 library and point module-path at it (SoftHSM2: apt-get install softhsm2, module-path=/usr/lib/softhsm/libsofthsm2.so)".into(),
            Pkcs11Error::NoToken { .. } => "correct token= (the token label, as `pkcs11-tool --module M --list-token-slots` shows it), or initialise the token".into(),
            Pkcs11Error::AmbiguousToken { .. } => "add slot-id= or serial= to the URI to pick one".into(),
            Pkcs11Error::Pin { .. } => "give the user PIN of that token in pin-value= (e.g. pin-value=${FLEXGATE_HSM_PIN}) or pin-source=file:/path; a locked (CKR_PIN_LOCKED) or expired PIN must first be unblocked or renewed by the token's security officer".into(),
            Pkcs11Error::PinHeld { .. } => "put the token's current user PIN where idp.key takes it from (the variable in pin-value=${…} or the pin-source file) and reload flexgate (SIGHUP; a changed pin-source file is tried at once); a locked (CKR_PIN_LOCKED) or expired PIN must first be unblocked or renewed by the token's security officer".into(),
            Pkcs11Error::PinFile { .. } => "create the file with the PIN on its first line, readable by flexgate only".into(),
            Pkcs11Error::NoKey { .. } => "correct object= (the key's label) or id=, or make the key with `flexgate keygen --pkcs11 URI`".into(),
            Pkcs11Error::AmbiguousKey { .. } => "give each key its own label, or name the key by id= as well".into(),
            Pkcs11Error::NotRsa { .. } | Pkcs11Error::Weak { .. } => "make an RSA key of 2048 bits or more: `flexgate keygen --pkcs11 URI --bits 2048`".into(),
            Pkcs11Error::Extractable { .. } => "make a sensitive, non-extractable key with `flexgate keygen --pkcs11 URI`, or set idp.allow_extractable_key = true if your HSM policy needs extractable keys (e.g. for backup)".into(),
            Pkcs11Error::AlwaysAuthenticate { .. } => "use a key without CKA_ALWAYS_AUTHENTICATE (`flexgate keygen --pkcs11 URI` makes one)".into(),
            Pkcs11Error::CannotSign { .. } => "use a key with CKA_SIGN = true (`flexgate keygen --pkcs11 URI` makes one)".into(),
            Pkcs11Error::Busy(_) => "raise idp.pkcs11_sessions if the token allows more sessions".into(),
            Pkcs11Error::LabelTaken { .. } => "pass --force to replace them (the certificate in Flex Console must then be replaced too), or pick another object= label".into(),
            Pkcs11Error::Certificate(_) => "check that openssl works on this machine (`openssl version`) and run keygen again".into(),
            Pkcs11Error::Token(_) => "check that the token is present and reachable (`pkcs11-tool --module M --list-token-slots`); flexgate re-opens it by itself once it is back".into(),
        }
    }
}

/// Return values after which a session, the login or the token must be opened again.
pub(crate) fn needs_reopen(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// A PKCS#11 failure during use (not set-up), as a [`Pkcs11Error::Token`].
pub(crate) fn token_err(what: &str, e: CkError) -> Pkcs11Error {
    Pkcs11Error::Token(format!("{what}: {e}"))
}
