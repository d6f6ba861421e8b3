//! What to paste into Flex Console (Admin → Single Sign-On) for a configuration: `flexgate check`
//! reports it and `flexgate init` prints it after a run. From the configuration alone.

use crate::config::{Config, SpConfig};
use serde::Serialize;

/// What to paste into Flex Console for one SP.
#[derive(Debug, Clone, Serialize)]
pub struct FlexConsole {
    pub sp: String,
    pub kind: String,
    pub single_sign_on_url: String,
    pub identity_provider_issuer: String,
    pub default_redirect_url: String,
    pub acs_url: String,
    pub audience: String,
    pub roles_claim: Option<String>,
}

/// The claim the SP's `roles` attribute is read from, if mapped.
pub fn roles_claim(sp: &SpConfig) -> Option<String> {
    sp.attributes
        .iter()
        .find(|a| a.saml_name == crate::flex::ROLES)
        .map(|a| a.claim.clone())
}

/// What to paste into Flex Console, per SP.
pub fn flex_console(cfg: &Config) -> Vec<FlexConsole> {
    cfg.sps
        .iter()
        .map(|sp| {
            let sso = match &cfg.upstream.connection {
                Some(c) => format!(
                    "{}?connection={}",
                    cfg.sso_url(),
                    url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ),
                None => cfg.sso_url(),
            };
            FlexConsole {
                sp: sp.name.clone(),
                kind: sp.kind.as_str().to_string(),
                single_sign_on_url: sso,
                identity_provider_issuer: cfg.idp.entity_id.clone(),
                default_redirect_url: cfg.init_url(sp),
                acs_url: sp.acs_url.clone(),
                audience: sp.entity_id.clone(),
                roles_claim: roles_claim(sp),
            }
        })
        .collect()
}

/// The Flex Console section of the report, followed by the certificate to paste.
pub fn render_flex_console(sps: &[FlexConsole], certificate_pem: &str) -> String {
    let mut o = String::new();
    for f in sps {
        o.push_str(&format!(
            "\n== Flex Console (Admin → Single Sign-On) for [[sp]] {:?} ({}) ==\n",
            f.sp, f.kind
        ));
        o.push_str(&format!(
            "  Identity Provider Issuer : {}\n",
            f.identity_provider_issuer
        ));
        o.push_str(&format!(
            "  Single Sign-On URL       : {}\n",
            f.single_sign_on_url
        ));
        o.push_str(&format!(
            "  Default Redirect URL     : {}   (IdP-initiated login, optional)\n",
            f.default_redirect_url
        ));
        o.push_str("  X.509 Certificate        : the PEM below (also served at /saml/cert.pem)\n");
        o.push_str(&format!(
            "  (Flex's ACS {} · audience {})\n",
            f.acs_url, f.audience
        ));
    }
    if !certificate_pem.is_empty() {
        o.push('\n');
        o.push_str(certificate_pem);
    }
    o
}
