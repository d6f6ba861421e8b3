//! The upstream provider seam: what differs between Auth0, Okta, Microsoft Entra ID, Google
//! Workspace, Keycloak and any other OpenID provider. Each preset is one file holding one
//! [`Preset`] value, listed in [`PRESETS`]; the rest of flexgate asks the preset instead of
//! assuming Auth0:
//! - the default claims for email, name and picture (and for roles, where the provider has a
//!   convention);
//! - where groups for `[sp.role_map]` come from: claims, and which directory lookup applies
//!   (Auth0 Management API, Microsoft Graph, Google Cloud Identity);
//! - extra authorize parameters (Auth0's `connection`);
//! - the set-up steps `flexgate check` prints.
//!
//! `[upstream] provider` picks one; without it, [`detect`] picks one from the issuer.
//! Adding a preset: one file here (and its `mod` line) and one row in [`PRESETS`]; the rest of
//! flexgate asks a preset for capabilities, never for its name.

mod auth0;
mod entra;
mod generic;
mod google;
mod keycloak;
mod okta;

pub use entra::groups_overage;
use url::Url;

/// A lookup, besides the tokens, that gives a person's roles or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directory {
    /// None: the ID token and userinfo carry everything.
    None,
    /// `app_metadata` from the Auth0 Management API (`[upstream.management]`, optional).
    Auth0Management,
    /// Transitive groups from Microsoft Graph, when the ID token has the groups overage.
    Graph,
    /// Transitive groups from the Google Cloud Identity API (a service-account key).
    CloudIdentity,
}

/// The provider preset in force: one of [`PRESETS`].
pub type Provider = &'static Preset;

/// Everything a provider does its own way.
#[derive(Debug)]
pub struct Preset {
    /// The value of `[upstream] provider`.
    pub name: &'static str,
    /// How people call it.
    pub title: &'static str,
    /// Default claims of the SAML attributes when `[sp.attributes]` is not set: `(attribute,
    /// claim)`. `roles` is left out where the provider has no roles convention (a role map
    /// gives them).
    pub attributes: &'static [(&'static str, &'static str)],
    /// The claims a person's groups are read from for `[sp.role_map]`, merged in this order,
    /// unless `[sp.attributes] groups` names one. `{client_id}` stands for `upstream.client_id`.
    pub groups_claims: &'static [&'static str],
    /// The directory lookup that applies.
    pub directory: Directory,
    /// Whether `upstream.connection` (Auth0's `connection` authorize parameter) means anything.
    pub connection: bool,
    /// Whether every ID token's `hd` must be `[upstream] hosted_domain` (required then).
    pub hosted_domain: bool,
    /// What to set up at the provider, printed by `flexgate check` (`{callback}` and
    /// `{client_id}` are filled in).
    pub steps: &'static [&'static str],
    /// Why this preset applies to an issuer, if it does (the first match in [`PRESETS`] wins).
    pub detect: fn(&Url) -> Option<String>,
}

/// The presets, in detection order; `generic` last (it matches everything).
pub static PRESETS: &[&Preset] = &[
    &auth0::PRESET,
    &okta::PRESET,
    &entra::PRESET,
    &google::PRESET,
    &keycloak::PRESET,
    &generic::PRESET,
];

impl PartialEq for Preset {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Preset {}

/// The preset `[upstream] provider` names.
pub fn by_name(name: &str) -> Option<Provider> {
    PRESETS.iter().copied().find(|p| p.name == name)
}

/// Every value `[upstream] provider` accepts, for messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| format!("{:?}", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preset that matches any issuer (last in [`PRESETS`]).
pub fn fallback() -> Provider {
    &generic::PRESET
}

/// The first preset with this capability, e.g. the one whose directory is the Auth0
/// Management API: for messages that name who a key belongs to.
pub fn owner(has: impl Fn(&Preset) -> bool) -> Option<Provider> {
    PRESETS.iter().copied().find(|p| has(p))
}

/// The preset in force and why: `explicit` (`[upstream] provider`) wins; else the first preset
/// whose detection matches the issuer.
pub fn resolve(explicit: Option<Provider>, issuer: &Url) -> (Provider, String) {
    if let Some(p) = explicit {
        return (p, "set by [upstream] provider".into());
    }
    detect(issuer)
}

/// The preset an issuer suggests, and why.
pub fn detect(issuer: &Url) -> (Provider, String) {
    PRESETS
        .iter()
        .find_map(|p| (p.detect)(issuer).map(|why| (*p, why)))
        .unwrap_or((fallback(), NO_MATCH.into()))
}

/// Why `generic` is in force when nothing chose another preset.
pub const NO_MATCH: &str = "no preset matches the issuer";

/// `host` is `domain` or one of its subdomains.
fn host_within(issuer: &Url, domain: &str) -> bool {
    issuer.host_str().is_some_and(|h| {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        h == domain || h.ends_with(&format!(".{domain}"))
    })
}

/// Whether an OpenID provider's discovery document has Auth0's shape (a custom domain in front
/// of an Auth0 tenant): `/authorize`, `/oauth/token` and `/.well-known/jwks.json` on the
/// issuer's origin, and Auth0's `/oidc/logout`.
pub fn discovery_is_auth0(issuer: &Url, endpoints: &[(&str, Option<&str>)]) -> bool {
    let want = [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("end_session_endpoint", "/oidc/logout"),
    ];
    want.iter().all(|(field, path)| {
        endpoints
            .iter()
            .find(|(f, _)| f == field)
            .and_then(|(_, v)| v.and_then(|v| Url::parse(v).ok()))
            .is_some_and(|u| u.origin() == issuer.origin() && u.path() == *path)
    })
}

/// A preset's groups claims with `{client_id}` filled in.
pub fn groups_claims(preset: &Preset, client_id: &str) -> Vec<String> {
    preset
        .groups_claims
        .iter()
        .map(|c| c.replace("{client_id}", client_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_str(issuer: &str) -> &'static str {
        detect(&Url::parse(issuer).unwrap()).0.name
    }

    #[test]
    fn the_issuer_picks_the_preset() {
        let cases = [
            ("https://example.us.auth0.com/", "auth0"),
            ("https://EXAMPLE.eu.auth0.com/", "auth0"),
            ("https://dev-1.okta.com/oauth2/default", "okta"),
            ("https://acme.oktapreview.com", "okta"),
            (
                "https://login.microsoftonline.com/0e0c-tenant/v2.0",
                "entra",
            ),
            ("https://accounts.google.com", "google"),
            ("https://sso.example.com/realms/contact-centre", "keycloak"),
            ("https://id.example.com/auth/realms/flex", "keycloak"),
            ("https://login.example.com/", "generic"),
            // Look-alikes are not the provider.
            ("https://auth0.com.evil.example/", "generic"),
            ("https://notokta.com/", "generic"),
            ("https://login.microsoftonline.com.evil.example/", "generic"),
            ("https://accounts.google.com.evil.example/", "generic"),
            ("https://example.com/notrealms/x", "generic"),
        ];
        for (issuer, want) in cases {
            assert_eq!(detect_str(issuer), want, "{issuer}");
        }
    }

    #[test]
    fn an_explicit_provider_wins_and_says_so() {
        let issuer = Url::parse("https://example.us.auth0.com/").unwrap();
        let (p, why) = resolve(by_name("generic"), &issuer);
        assert_eq!(p.name, "generic");
        assert!(why.contains("[upstream] provider"), "{why}");
        let (p, why) = resolve(None, &issuer);
        assert_eq!(p.name, "auth0");
        assert!(why.contains("auth0.com"), "{why}");
    }

    #[test]
    fn every_preset_has_its_own_name_and_generic_is_last() {
        for (i, p) in PRESETS.iter().enumerate() {
            assert_eq!(by_name(p.name).map(|x| x.name), Some(p.name));
            assert_eq!(
                PRESETS.iter().filter(|x| x.name == p.name).count(),
                1,
                "{}",
                p.name
            );
            assert!(!p.steps.is_empty(), "{}", p.name);
            assert!(
                p.attributes.iter().any(|(a, _)| *a == "email"),
                "{}",
                p.name
            );
            let matches_all = (p.detect)(&Url::parse("https://x.example/").unwrap()).is_some();
            assert!(!matches_all, "{} matches any issuer", p.name);
            if i + 1 == PRESETS.len() {
                assert_eq!(p.name, fallback().name);
            }
        }
        assert!(by_name("ping").is_none());
        assert!(names().contains("\"keycloak\""));
    }

    #[test]
    fn keycloak_client_roles_name_the_client() {
        let c = groups_claims(by_name("keycloak").unwrap(), "flexgate");
        assert_eq!(
            c,
            [
                "realm_access.roles",
                "resource_access.flexgate.roles",
                "groups"
            ]
        );
    }

    #[test]
    fn auth0_discovery_is_recognised_behind_a_custom_domain() {
        let issuer = Url::parse("https://login.acme.com/").unwrap();
        let auth0 = [
            (
                "authorization_endpoint",
                Some("https://login.acme.com/authorize"),
            ),
            ("token_endpoint", Some("https://login.acme.com/oauth/token")),
            (
                "jwks_uri",
                Some("https://login.acme.com/.well-known/jwks.json"),
            ),
            (
                "end_session_endpoint",
                Some("https://login.acme.com/oidc/logout"),
            ),
        ];
        assert!(discovery_is_auth0(&issuer, &auth0));
        let mut other = auth0;
        other[1].1 = Some("https://login.acme.com/token");
        assert!(!discovery_is_auth0(&issuer, &other));
        let mut foreign = auth0;
        foreign[2].1 = Some("https://evil.example/.well-known/jwks.json");
        assert!(!discovery_is_auth0(&issuer, &foreign));
        let mut missing = auth0;
        missing[3].1 = None;
        assert!(!discovery_is_auth0(&issuer, &missing));
    }
}
