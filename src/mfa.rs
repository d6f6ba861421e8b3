//! Step-up MFA, enforced by flexgate: per SP `mfa = "never" | "always" | "on-request"`, what to
//! ask the upstream for, how an ID token proves a second factor (`amr` / `acr`), and which
//! `AuthnContextClassRef` the assertion states. Pure: no I/O.
//!
//! Outcomes when MFA is required and the ID token does not prove it:
//! - the SP asked for it (`RequestedAuthnContext`, `on-request`): the SP gets a signed
//!   `Responder/NoAuthnContext` Response — SAML's answer, so the SP can react (e.g. retry);
//! - flexgate's own policy (`always`): the person gets a page that explains — Flex shows nothing
//!   useful for a status Response, and the fix is at the identity provider.

use crate::saml::request::{Comparison, RequestedAuthnContext};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

pub const PAPE_MFA: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";
pub const AC_PASSWORD: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password";
pub const AC_PPT: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
pub const AC_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";

/// Per SP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MfaMode {
    #[default]
    Never,
    Always,
    OnRequest,
}

/// How an ID token proves MFA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proof {
    Amr,
    Acr,
    AmrOrAcr,
}

/// `[mfa]`: one policy for the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaPolicy {
    /// Sent as `acr_values` when MFA is required (Auth0: the PAPE multi-factor URI).
    pub acr_values: String,
    pub proof: Proof,
    /// `amr` values that count as a second factor.
    pub amr_values: Vec<String>,
    /// The `AuthnContextClassRef` stated when MFA was proven.
    pub context_class: String,
    /// The `AuthnContextClassRef` stated otherwise.
    pub plain_class: String,
    /// Requested class refs that mean "multi-factor".
    pub request_classes: Vec<String>,
    /// ForceAuthn: how long before the request the upstream's `auth_time` may be
    /// (`[mfa] reauth_window_secs`; its default and range live in the config validator).
    pub reauth_window: Duration,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        MfaPolicy {
            acr_values: PAPE_MFA.into(),
            proof: Proof::AmrOrAcr,
            amr_values: vec!["mfa".into()],
            context_class: PAPE_MFA.into(),
            plain_class: AC_PPT.into(),
            request_classes: vec![
                PAPE_MFA.into(),
                "https://refeds.org/profile/mfa".into(),
                "http://schemas.microsoft.com/claims/multipleauthn".into(),
                "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract".into(),
                "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered".into(),
                "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken".into(),
            ],
            reauth_window: Duration::ZERO,
        }
    }
}

/// What a login must achieve and what its assertion will say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// The ID token must prove a second factor.
    pub require_mfa: bool,
    /// The requirement comes from the SP's RequestedAuthnContext (so a failure is answered with
    /// a SAML status, not a page).
    pub requested_by_sp: bool,
    /// AuthnContextClassRef when MFA was proven / when it was not.
    pub class_if_mfa: String,
    pub class_if_plain: String,
}

/// The SP asked for something flexgate cannot produce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the requested authentication context ({comparison:?}: {refs}) cannot be satisfied")]
pub struct Unsatisfiable {
    pub comparison: Comparison,
    pub refs: String,
}

impl MfaPolicy {
    /// 2 = multi-factor, 1 = password-based, 0 = unspecified, None = a class flexgate cannot produce.
    fn level(&self, class: &str) -> Option<u8> {
        if self.request_classes.iter().any(|c| c == class) || class == self.context_class {
            Some(2)
        } else if class == AC_PASSWORD || class == AC_PPT || class == self.plain_class {
            Some(1)
        } else if class == AC_UNSPECIFIED {
            Some(0)
        } else {
            None
        }
    }

    /// Decides what a login must achieve, from the SP's mode and the request's context.
    pub fn plan(
        &self,
        mode: MfaMode,
        requested: Option<&RequestedAuthnContext>,
    ) -> Result<Plan, Unsatisfiable> {
        let mut plan = Plan {
            require_mfa: mode == MfaMode::Always,
            requested_by_sp: false,
            class_if_mfa: self.context_class.clone(),
            class_if_plain: self.plain_class.clone(),
        };
        let Some(req) = requested.filter(|r| !r.class_refs.is_empty()) else {
            return Ok(plan);
        };
        if mode == MfaMode::Never {
            // The SP's wishes are not flexgate's business in this mode; the assertion states
            // what happened.
            return Ok(plan);
        }
        let unsat = || Unsatisfiable {
            comparison: req.comparison,
            refs: req.class_refs.join(" "),
        };
        let known: Vec<(&str, u8)> = req
            .class_refs
            .iter()
            .filter_map(|c| self.level(c).map(|l| (c.as_str(), l)))
            .collect();
        if known.is_empty() {
            return Err(unsat());
        }
        let mfa_ref = known
            .iter()
            .find(|(_, l)| *l == 2)
            .map(|(c, _)| c.to_string());
        let plain_ref = known
            .iter()
            .find(|(_, l)| *l < 2)
            .map(|(c, _)| c.to_string());
        match req.comparison {
            Comparison::Exact | Comparison::Maximum => {
                // State one of the listed classes, exactly.
                if let Some(m) = &mfa_ref {
                    plan.class_if_mfa = m.clone();
                } else if let Some(p) = &plain_ref {
                    plan.class_if_mfa = p.clone();
                }
                match &plain_ref {
                    Some(p) => plan.class_if_plain = p.clone(),
                    None => {
                        // Only multi-factor classes are acceptable.
                        plan.require_mfa = true;
                        plan.requested_by_sp = true;
                    }
                }
                if req.comparison == Comparison::Maximum
                    && mode == MfaMode::Always
                    && plain_ref.is_some()
                    && mfa_ref.is_none()
                {
                    // "At most password", but policy demands MFA: state the listed class.
                    plan.class_if_mfa = plain_ref.clone().unwrap_or_default();
                }
            }
            Comparison::Minimum => {
                let min = known.iter().map(|(_, l)| *l).min().unwrap_or(0);
                if min >= 2 {
                    plan.require_mfa = true;
                    plan.requested_by_sp = true;
                }
                if let Some(m) = &mfa_ref {
                    plan.class_if_mfa = m.clone();
                }
            }
            Comparison::Better => {
                let max = known.iter().map(|(_, l)| *l).max().unwrap_or(0);
                if max >= 2 {
                    return Err(unsat());
                }
                plan.require_mfa = true;
                plan.requested_by_sp = true;
            }
        }
        Ok(plan)
    }

    /// Does the ID token prove a second factor?
    pub fn proven(&self, claims: &Map<String, Value>) -> bool {
        let by_amr = || {
            claims
                .get("amr")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .any(|v| self.amr_values.iter().any(|m| m == v))
                })
        };
        let by_acr = || claims.get("acr").and_then(Value::as_str) == Some(self.acr_values.as_str());
        match self.proof {
            Proof::Amr => by_amr(),
            Proof::Acr => by_acr(),
            Proof::AmrOrAcr => by_amr() || by_acr(),
        }
    }
}

/// What the request asked about the sign-in itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInAsk {
    pub force_authn: bool,
    pub is_passive: bool,
    /// When the login started (unix seconds, flexgate's clock).
    pub started_at: i64,
}

/// Whether the upstream's sign-in fits what the request asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Fits,
    /// ForceAuthn, and `auth_time` is missing or older than the re-authentication window.
    NotFresh,
    /// IsPassive, and `auth_time` is at or after the request: the upstream made the person
    /// sign in (it ignored `prompt=none`), so the login was not passive.
    NotPassive,
}

/// Checks `auth_time` against ForceAuthn (a sign-in within `window` before the request) and
/// IsPassive (no sign-in at or after the request). IsPassive is checked first: it wins over
/// ForceAuthn when the SP sends both (the upstream was asked `prompt=none`).
pub fn sign_in_fits(ask: SignInAsk, auth_time: Option<i64>, window: Duration) -> SignIn {
    if ask.is_passive && auth_time.is_some_and(|t| t >= ask.started_at) {
        return SignIn::NotPassive;
    }
    if !ask.force_authn {
        return SignIn::Fits;
    }
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    match auth_time {
        Some(t) if t >= ask.started_at.saturating_sub(window) => SignIn::Fits,
        _ => SignIn::NotFresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(c: Comparison, refs: &[&str]) -> RequestedAuthnContext {
        RequestedAuthnContext {
            comparison: c,
            class_refs: refs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn modes_without_a_request() {
        let p = MfaPolicy::default();
        assert!(!p.plan(MfaMode::Never, None).unwrap().require_mfa);
        assert!(p.plan(MfaMode::Always, None).unwrap().require_mfa);
        assert!(!p.plan(MfaMode::OnRequest, None).unwrap().require_mfa);
    }

    #[test]
    fn on_request_follows_the_requested_context() {
        let p = MfaPolicy::default();
        let plan = p
            .plan(
                MfaMode::OnRequest,
                Some(&req(Comparison::Exact, &[PAPE_MFA])),
            )
            .unwrap();
        assert!(plan.require_mfa && plan.requested_by_sp);
        assert_eq!(plan.class_if_mfa, PAPE_MFA);
        let plan = p
            .plan(MfaMode::OnRequest, Some(&req(Comparison::Exact, &[AC_PPT])))
            .unwrap();
        assert!(!plan.require_mfa);
        assert_eq!(plan.class_if_plain, AC_PPT);
        let plan = p
            .plan(
                MfaMode::OnRequest,
                Some(&req(Comparison::Minimum, &[AC_PASSWORD])),
            )
            .unwrap();
        assert!(!plan.require_mfa);
        let plan = p
            .plan(
                MfaMode::OnRequest,
                Some(&req(
                    Comparison::Minimum,
                    &["https://refeds.org/profile/mfa"],
                )),
            )
            .unwrap();
        assert!(plan.require_mfa);
        assert_eq!(plan.class_if_mfa, "https://refeds.org/profile/mfa");
        let plan = p
            .plan(
                MfaMode::OnRequest,
                Some(&req(Comparison::Better, &[AC_PPT])),
            )
            .unwrap();
        assert!(plan.require_mfa);
        assert!(p
            .plan(
                MfaMode::OnRequest,
                Some(&req(Comparison::Better, &[PAPE_MFA]))
            )
            .is_err());
        assert!(p
            .plan(
                MfaMode::OnRequest,
                Some(&req(
                    Comparison::Exact,
                    &["urn:oasis:names:tc:SAML:2.0:ac:classes:X509"]
                ))
            )
            .is_err());
    }

    #[test]
    fn always_with_a_password_request_states_the_listed_class() {
        // Flex Legacy asks exact PasswordProtectedTransport; MFA is still required by policy.
        let p = MfaPolicy::default();
        let plan = p
            .plan(MfaMode::Always, Some(&req(Comparison::Exact, &[AC_PPT])))
            .unwrap();
        assert!(plan.require_mfa && !plan.requested_by_sp);
        assert_eq!(plan.class_if_mfa, AC_PPT);
    }

    #[test]
    fn never_ignores_the_request() {
        let p = MfaPolicy::default();
        let plan = p
            .plan(MfaMode::Never, Some(&req(Comparison::Exact, &["urn:x"])))
            .unwrap();
        assert!(!plan.require_mfa);
    }

    #[test]
    fn proof_by_amr_or_acr() {
        let p = MfaPolicy::default();
        let c = |v: Value| v.as_object().cloned().unwrap();
        assert!(p.proven(&c(json!({"amr": ["pwd", "mfa"]}))));
        assert!(!p.proven(&c(json!({"amr": ["pwd"]}))));
        assert!(p.proven(&c(json!({"acr": PAPE_MFA}))));
        assert!(!p.proven(&c(json!({"acr": "urn:other"}))));
        let amr_only = MfaPolicy {
            proof: Proof::Amr,
            ..MfaPolicy::default()
        };
        assert!(!amr_only.proven(&c(json!({"acr": PAPE_MFA}))));
    }

    #[test]
    fn force_authn_needs_a_sign_in_within_the_window() {
        let ask = SignInAsk {
            force_authn: true,
            is_passive: false,
            started_at: 1_000,
        };
        let w = Duration::from_secs(5);
        assert_eq!(sign_in_fits(ask, Some(1_000), w), SignIn::Fits);
        assert_eq!(sign_in_fits(ask, Some(1_003), w), SignIn::Fits);
        assert_eq!(sign_in_fits(ask, Some(995), w), SignIn::Fits);
        // 50 s old passed the old 60 s (clock-skew) tolerance; not any more.
        for t in [Some(994), Some(950), None] {
            assert_eq!(sign_in_fits(ask, t, w), SignIn::NotFresh, "{t:?}");
        }
        assert_eq!(
            sign_in_fits(ask, Some(999), Duration::ZERO),
            SignIn::NotFresh
        );
        assert_eq!(sign_in_fits(ask, Some(0), Duration::MAX), SignIn::Fits);
    }

    #[test]
    fn is_passive_refuses_a_sign_in_at_or_after_the_request() {
        let w = Duration::from_secs(5);
        let passive = SignInAsk {
            force_authn: false,
            is_passive: true,
            started_at: 1_000,
        };
        assert_eq!(sign_in_fits(passive, Some(999), w), SignIn::Fits);
        assert_eq!(sign_in_fits(passive, None, w), SignIn::Fits);
        assert_eq!(sign_in_fits(passive, Some(1_000), w), SignIn::NotPassive);
        assert_eq!(sign_in_fits(passive, Some(1_030), w), SignIn::NotPassive);
        let both = SignInAsk {
            force_authn: true,
            ..passive
        };
        assert_eq!(sign_in_fits(both, Some(1_001), w), SignIn::NotPassive);
        let neither = SignInAsk {
            is_passive: false,
            ..passive
        };
        assert_eq!(sign_in_fits(neither, Some(1), w), SignIn::Fits);
        assert_eq!(sign_in_fits(neither, Some(1_001), w), SignIn::Fits);
    }
}
