//! `[idp]`, `[limits]` and `[mfa]`: what flexgate states in its assertions and what it accepts.

use super::Problems;
use crate::config::keys::KeyLocation;
use crate::config::raw::{RawIdp, RawLimits, RawMfa};
use crate::config::{IdpConfig, LimitsConfig};
use crate::mfa::MfaPolicy;

/// `idp.pkcs11_sessions` when it is not set.
const DEFAULT_PKCS11_SESSIONS: u64 = 8;

/// `idp.pin_retry_secs` when it is not set, and its range: never under 5 minutes, so a wrong PIN
/// costs a token's retry counter at most one attempt per 5 minutes.
const DEFAULT_PIN_RETRY_SECS: u64 = 300;
const PIN_RETRY_SECS: std::ops::RangeInclusive<u64> = 300..=86_400;

/// `[idp]`; the default entity id derives from `public_url` (absent when `server.public_url`
/// is wrong, which is recorded already).
pub(super) fn idp(raw: RawIdp, public_url: Option<&str>, p: &mut Problems) -> Option<IdpConfig> {
    let entity_id = match (raw.entity_id, public_url) {
        (Some(e), _) => Some(e),
        (None, Some(u)) => Some(format!("{u}/saml/metadata")),
        (None, None) => None,
    };
    let entity_id = entity_id.filter(|e| {
        let ok = !e.trim().is_empty() && e.trim() == e;
        if !ok {
            p.add(
                "idp.entity_id",
                "is empty or has surrounding spaces",
                "remove it to use {public_url}/saml/metadata, or write the issuer Flex expects",
            );
        }
        ok
    });
    let assertion_lifetime = p.secs(
        "idp.assertion_lifetime_secs",
        raw.assertion_lifetime_secs,
        300,
        30..=3600,
    );
    let clock_skew = p.secs("idp.clock_skew_secs", raw.clock_skew_secs, 60, 0..=600);
    let request_max_age = p.secs(
        "idp.request_max_age_secs",
        raw.request_max_age_secs,
        300,
        30..=3600,
    );
    let key = match KeyLocation::parse(&raw.key, &p.base, &|v| p.expand(v)) {
        Ok(k) => Some(k),
        Err(problem) => {
            p.add("idp.key", problem, "write a PEM file path, or pkcs11:token=T;object=L?module-path=M&pin-value=P (README: signing key in an HSM)");
            None
        }
    };
    let pkcs11_sessions = p.within(
        "idp.pkcs11_sessions",
        raw.pkcs11_sessions
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
        DEFAULT_PKCS11_SESSIONS,
        1..=256,
        "sessions (at most what the token allows)",
    );
    let pin_retry = p.secs(
        "idp.pin_retry_secs",
        raw.pin_retry_secs,
        DEFAULT_PIN_RETRY_SECS,
        PIN_RETRY_SECS,
    );
    Some(IdpConfig {
        entity_id: entity_id?,
        key: key?,
        cert: p.path(&raw.cert),
        next_cert: raw.next_cert.map(|c| p.path(&c)),
        assertion_lifetime: assertion_lifetime?,
        clock_skew: clock_skew?,
        request_max_age: request_max_age?,
        authn_context_class: raw
            .authn_context_class
            .unwrap_or_else(|| crate::saml::ns::AC_PPT.to_string()),
        allow_insecure_key_permissions: raw.allow_insecure_key_permissions,
        pkcs11_sessions: usize::try_from(pkcs11_sessions?).ok()?,
        allow_extractable_key: raw.allow_extractable_key,
        pin_retry: pin_retry?,
    })
}

/// `max_pending_logins` when it is not set.
const DEFAULT_MAX_PENDING_LOGINS: usize = 100_000;

/// `[limits]`: every value is accepted; unset ones take the defaults.
pub(super) fn limits(raw: RawLimits) -> LimitsConfig {
    let d = crate::saml::request::Limits::default();
    LimitsConfig {
        saml: crate::saml::request::Limits {
            max_encoded: raw.max_saml_request_bytes.unwrap_or(d.max_encoded),
            max_xml: raw.max_authn_request_xml_bytes.unwrap_or(d.max_xml),
            max_relay_state: raw.max_relay_state_bytes.unwrap_or(d.max_relay_state),
        },
        max_pending_logins: raw.max_pending_logins.unwrap_or(DEFAULT_MAX_PENDING_LOGINS),
    }
}

/// `[mfa] reauth_window_secs`: ForceAuthn accepts an upstream sign-in at most this long before
/// the request. Tight on purpose: an OP that ignores `prompt=login`/`max_age=0` and reports an
/// older session must not pass as a fresh sign-in.
const REAUTH_WINDOW_SECS: u64 = 5;
const REAUTH_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 0..=60;

/// `[mfa]` over the defaults; `plain_class` is the IdP's AuthnContextClassRef (absent when
/// `[idp]` is wrong, which is recorded already).
pub(super) fn mfa(
    raw: Option<RawMfa>,
    plain_class: Option<String>,
    p: &mut Problems,
) -> Option<MfaPolicy> {
    let mut mfa = MfaPolicy::default();
    let m = raw.unwrap_or_default();
    let proof = p.choice(
        "mfa.proof",
        m.proof.as_deref(),
        mfa.proof,
        "use \"amr\" (amr contains one of amr_values), \"acr\" (acr equals acr_values) or \"amr-or-acr\"",
    );
    let amr_values = match m.amr_values {
        Some(v) if v.is_empty() => {
            p.add(
                "mfa.amr_values",
                "is empty",
                "list the amr values that mean a second factor, e.g. [\"mfa\"]",
            );
            None
        }
        Some(v) => Some(v),
        None => Some(std::mem::take(&mut mfa.amr_values)),
    };
    let reauth_window = p.secs(
        "mfa.reauth_window_secs",
        m.reauth_window_secs,
        REAUTH_WINDOW_SECS,
        REAUTH_WINDOW_RANGE,
    );
    if let Some(a) = m.acr_values {
        mfa.acr_values = a;
    }
    if let Some(c) = m.context_class {
        mfa.context_class = c;
    }
    if let Some(r) = m.request_classes {
        mfa.request_classes = r;
    }
    mfa.proof = proof?;
    mfa.amr_values = amr_values?;
    mfa.reauth_window = reauth_window?;
    mfa.plain_class = plain_class?;
    Some(mfa)
}
