//! `flexgate check`: a doctor for a deployment. Validates the config and key material, reaches
//! the upstream (discovery + JWKS) and the Auth0 Management API when roles are read there, and
//! prints exactly what to paste into Flex Console and Auth0.

use crate::auth0::management::Management;
use crate::config::keys::{self, PublishedCert};
use crate::config::Config;
pub use crate::flex_console::{flex_console, render_flex_console, roles_claim, FlexConsole};
use crate::oidc::discovery::ProviderMetadata;
use crate::oidc::Upstream;
use crate::provider::Directory;
use serde::Serialize;

/// How a finding bears on the deployment; any `Fail` fails the check (exit 1).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    /// The column printed before a finding.
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "  ok  ",
            Level::Warn => "  WARN",
            Level::Fail => "  FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

/// What to paste into Auth0.
#[derive(Debug, Clone, Serialize)]
pub struct Auth0Setup {
    pub allowed_callback_url: String,
    pub post_login_action: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub role: &'static str,
    pub subject: String,
    pub not_after: String,
    pub days_left: i32,
    pub sha256_fingerprint: String,
}

/// The upstream provider preset in force, and what to set up there.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSetup {
    /// `[upstream] provider`'s value.
    pub provider: &'static str,
    pub title: &'static str,
    /// Why this preset: configured, or what in the issuer (or its discovery) matched.
    pub reason: String,
    /// Where roles or groups come from.
    pub roles_from: String,
    /// The set-up steps at the identity provider.
    pub steps: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: String,
    pub findings: Vec<Finding>,
    pub certificates: Vec<CertInfo>,
    pub certificate_pem: String,
    pub flex_console: Vec<FlexConsole>,
    pub identity_provider: ProviderSetup,
    pub auth0: Auth0Setup,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Fail)
    }
}

fn finding(level: Level, what: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        what: what.into(),
        detail: detail.into(),
    }
}

fn cert_info(role: &'static str, c: &PublishedCert) -> CertInfo {
    CertInfo {
        role,
        subject: c.subject.clone(),
        not_after: c.not_after.clone(),
        days_left: c.days_left,
        sha256_fingerprint: c.sha256_fingerprint.clone(),
    }
}

fn cert_findings(role: &str, c: &PublishedCert, out: &mut Vec<Finding>) {
    if c.days_left < 0 {
        out.push(finding(Level::Fail, format!("{role} certificate"), format!("expired on {}; generate a new pair with `flexgate keygen` and follow the README's key rollover", c.not_after)));
    } else if c.days_left < 30 {
        out.push(finding(
            Level::Warn,
            format!("{role} certificate"),
            format!(
                "expires on {} ({} days); plan a rollover (README: key rollover)",
                c.not_after, c.days_left
            ),
        ));
    } else {
        out.push(finding(
            Level::Ok,
            format!("{role} certificate"),
            format!("valid until {} ({} days)", c.not_after, c.days_left),
        ));
    }
}

/// Runs every check. Config errors are the caller's (they stop before this).
pub async fn run(cfg: &Config) -> Report {
    let mut findings = vec![finding(
        Level::Ok,
        "configuration",
        format!(
            "{} is valid ({} service provider(s))",
            cfg.source.display(),
            cfg.sps.len()
        ),
    )];
    let keys = key_findings(cfg, &mut findings);
    findings.push(admin_finding(cfg.server.admin_listen));
    let meta = upstream_findings(cfg, &mut findings).await;
    let identity_provider = provider_setup(cfg, meta.as_ref());
    findings.push(finding(
        Level::Ok,
        "provider",
        format!(
            "{} ({})",
            identity_provider.provider, identity_provider.reason
        ),
    ));
    management_findings(cfg, &mut findings).await;
    directory_findings(cfg, &mut findings).await;
    let namespaced = cfg
        .sps
        .iter()
        .filter_map(roles_claim)
        .find(|c| c.starts_with("https://") || c.starts_with("http://"));
    Report {
        config: cfg.source.display().to_string(),
        findings,
        certificates: keys.certificates,
        certificate_pem: keys.certificate_pem,
        flex_console: flex_console(cfg),
        identity_provider,
        auth0: Auth0Setup {
            allowed_callback_url: cfg.callback_url(),
            post_login_action: namespaced
                .map(|c| crate::auth0::init::action::code(&c, &cfg.upstream.client_id)),
        },
    }
}

/// Who can reach an address flexgate listens on.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// Loopback, RFC 1918 / RFC 4193 private or link-local.
    Private,
    /// `0.0.0.0` or `::`: every interface of the host.
    Every,
    Public,
}

fn reach(ip: std::net::IpAddr) -> Reach {
    use std::net::IpAddr;
    if ip.is_unspecified() {
        return Reach::Every;
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    };
    if private {
        Reach::Private
    } else {
        Reach::Public
    }
}

/// Where `/metrics` and the readiness detail are served. The admin listener has no
/// authentication, so an address reachable from outside the host or its private network warns.
pub fn admin_finding(admin: Option<std::net::SocketAddr>) -> Finding {
    let what = "admin listener";
    let Some(addr) = admin else {
        return finding(
            Level::Ok,
            what,
            "off (server.admin_listen unset): /metrics and the readiness detail are not served",
        );
    };
    match reach(addr.ip()) {
        Reach::Private => finding(Level::Ok, what, format!("http://{addr} (/metrics, /readyz detail, admin pages; plain HTTP, no authentication)")),
        Reach::Every => finding(Level::Warn, what, format!("{addr} listens on every interface with no authentication; keep its port private (firewall, NetworkPolicy) and never proxy it, or bind a loopback or private address")),
        Reach::Public => finding(Level::Warn, what, format!("{addr} is a public address and the admin listener has no authentication; bind 127.0.0.1 or a private address")),
    }
}

/// Where the signing key lives and, for a token key, its attributes (an extractable key warns).
fn signing_key_findings(cfg: &Config, k: &keys::KeyMaterial, out: &mut Vec<Finding>) {
    use crate::saml::sign::SigningKey;
    match k.signer.key() {
        SigningKey::Pem(..) => out.push(finding(
            Level::Ok,
            "signing key",
            format!(
                "{} is an RSA key that matches {}",
                cfg.idp.key.display(),
                cfg.idp.cert.display()
            ),
        )),
        SigningKey::Token(t) => {
            let facts = t.facts();
            out.push(finding(
                Level::Ok,
                "signing key",
                format!(
                    "in a PKCS#11 token: {} — {}; it matches {}",
                    t.uri(),
                    facts.describe(),
                    cfg.idp.cert.display()
                ),
            ));
            if facts.extractable || !facts.sensitive {
                out.push(finding(Level::Warn, "signing key", "the key can be read out of the token (CKA_EXTRACTABLE true or CKA_SENSITIVE false; accepted because idp.allow_extractable_key = true): make a non-extractable one with `flexgate keygen --pkcs11 URI` and roll over to it (README: key rollover)"));
            }
        }
    }
}

/// The certificates the report shows.
#[derive(Default)]
struct KeyReport {
    certificates: Vec<CertInfo>,
    certificate_pem: String,
}

/// The signing key, the live certificate and the next one.
fn key_findings(cfg: &Config, findings: &mut Vec<Finding>) -> KeyReport {
    let k = match keys::load(cfg) {
        Ok(k) => k,
        Err(e) => {
            findings.push(finding(Level::Fail, "signing key", e.to_string()));
            return KeyReport::default();
        }
    };
    signing_key_findings(cfg, &k, findings);
    cert_findings("live", &k.cert, findings);
    let mut certificates = vec![cert_info("live", &k.cert)];
    if let Some(n) = &k.next_cert {
        cert_findings("next", n, findings);
        certificates.push(cert_info("next", n));
        findings.push(finding(Level::Ok, "key rollover", "the next certificate is published in metadata; Flex still validates with the live one until you swap it in Flex Console"));
    }
    KeyReport {
        certificates,
        certificate_pem: k.cert.pem.clone(),
    }
}

/// `[upstream.management]`: a token from the Management API that carries `read:users`, and how
/// roles will be read.
async fn management_findings(cfg: &Config, out: &mut Vec<Finding>) {
    let Some(m) = &cfg.upstream.management else {
        return;
    };
    let what = "Auth0 Management API";
    let mgmt = match Management::new(m.clone(), cfg.upstream.timeout) {
        Ok(mgmt) => mgmt,
        Err(e) => return out.push(finding(Level::Fail, what, e.to_string())),
    };
    let how = match m.prefetch {
        Some(every) => format!("every user with a Flex role is read in bulk every {} s and shared through the store; others are read at login", every.as_secs()),
        None => "roles are read at each login (prefetch_secs = 0)".to_string(),
    };
    out.push(
        match crate::auth0::users::count_with_roles(mgmt.client()).await {
            Err(e) => finding(Level::Fail, what, e.to_string()),
            Ok(n) => finding(
                Level::Ok,
                what,
                format!("{} answered: {n} user(s) have a Flex role; {how}", m.url),
            ),
        },
    );
}

/// The preset in force; an issuer no preset knows whose discovery document is Auth0's is an
/// Auth0 tenant behind a custom domain.
fn provider_setup(cfg: &Config, meta: Option<&ProviderMetadata>) -> ProviderSetup {
    let up = &cfg.upstream;
    let mut preset = up.preset();
    let mut reason = up.provider_reason.clone();
    let issuer = url::Url::parse(&up.issuer).ok();
    if let (Some(meta), Some(issuer)) = (meta, &issuer) {
        let endpoints = [
            (
                "authorization_endpoint",
                Some(meta.authorization_endpoint.as_str()),
            ),
            ("token_endpoint", Some(meta.token_endpoint.as_str())),
            ("jwks_uri", Some(meta.jwks_uri.as_str())),
            ("end_session_endpoint", meta.end_session_endpoint.as_deref()),
        ];
        if up.provider == crate::provider::fallback()
            && reason == crate::provider::NO_MATCH
            && crate::provider::discovery_is_auth0(issuer, &endpoints)
        {
            preset = crate::provider::owner(|p| p.directory == Directory::Auth0Management)
                .unwrap_or(preset);
            reason = format!(
                "{} has Auth0's discovery document (a custom domain)",
                up.issuer
            );
        }
    }
    let steps = preset
        .steps
        .iter()
        .map(|s| {
            s.replace("{callback}", &cfg.callback_url())
                .replace("{client_id}", &up.client_id)
        })
        .collect();
    let roles_from = match preset.directory {
        Directory::Auth0Management if up.management.is_some() => {
            "app_metadata from the Auth0 Management API ([upstream.management])".to_string()
        }
        Directory::Graph => {
            "the ID token's roles and groups; on the groups overage, Microsoft Graph".into()
        }
        Directory::CloudIdentity if up.google.is_some() => {
            "groups from the Google Cloud Identity API (service account)".into()
        }
        _ => "the ID token and userinfo claims".into(),
    };
    ProviderSetup {
        provider: preset.name,
        title: preset.title,
        reason,
        roles_from,
        steps,
    }
}

/// The directory clients the preset needs: the service-account key read and parsed, and a token
/// from each directory's token endpoint.
async fn directory_findings(cfg: &Config, out: &mut Vec<Finding>) {
    let up = &cfg.upstream;
    if up.google.is_none() && up.graph.is_none() {
        return;
    }
    let d = match crate::directory::Directories::build(up) {
        Ok(d) => d,
        Err(e) => return out.push(finding(Level::Fail, e.directory(), e.to_string())),
    };
    let deadline = tokio::time::Instant::now() + up.timeout;
    if let (Some(ci), Some(g)) = (&d.google, &up.google) {
        let what = "Google Cloud Identity";
        out.push(match ci.check_token(deadline).await {
            Err(e) => finding(Level::Fail, what, e.to_string()),
            Ok(()) => finding(Level::Ok, what, format!("service account {} (key {}) got a token; groups are read from {} at each login with a role map (the account needs the Groups Reader admin role)", ci.client_email(), g.service_account_key.display(), g.cloud_identity_url)),
        });
    }
    if let (Some(graph), Some(g)) = (&d.graph, &up.graph) {
        let what = "Microsoft Graph";
        out.push(match graph.check_token(deadline).await {
            Err(e) => finding(Level::Fail, what, e.to_string()),
            Ok(()) => finding(Level::Ok, what, format!("a client-credentials token from {}; on the groups overage, groups are read from {} (the application needs GroupMember.Read.All with admin consent)", g.token_url, g.graph_url)),
        });
    }
}

/// Discovery, the JWKS, the ID-token algorithms and userinfo at the upstream.
async fn upstream_findings(cfg: &Config, findings: &mut Vec<Finding>) -> Option<ProviderMetadata> {
    let up = match Upstream::new(cfg.upstream.clone(), cfg.callback_url()) {
        Ok(up) => up,
        Err(e) => {
            findings.push(finding(Level::Fail, "upstream", e.to_string()));
            return None;
        }
    };
    let meta = match up.warm_up().await {
        Ok(meta) => meta,
        Err(e) => {
            findings.push(finding(Level::Fail, "upstream discovery", e.to_string()));
            return None;
        }
    };
    findings.push(finding(
        Level::Ok,
        "upstream discovery",
        format!(
            "{} answered; issuer matches",
            crate::oidc::discovery::discovery_url(&cfg.upstream.issuer)
        ),
    ));
    findings.push(finding(
        Level::Ok,
        "upstream keys",
        format!("JWKS fetched from {}", meta.jwks_uri),
    ));
    if let Some(algs) = &meta.id_token_signing_alg_values_supported {
        let allowed: Vec<String> = crate::oidc::id_token::ALLOWED_ALGS
            .iter()
            .map(|a| a.to_string())
            .collect();
        if !algs.iter().any(|a| allowed.contains(a)) {
            findings.push(finding(
                Level::Fail,
                "ID token algorithm",
                format!(
                    "the upstream signs ID tokens with {} only; flexgate accepts {}",
                    algs.join(", "),
                    allowed.join(", ")
                ),
            ));
        }
    }
    if meta.userinfo_endpoint.is_none() && cfg.upstream.userinfo {
        findings.push(finding(
            Level::Warn,
            "userinfo",
            "the upstream has no userinfo endpoint; claims come from the ID token only",
        ));
    }
    Some((*meta).clone())
}

/// The report as people read it.
pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    o.push_str(&format!("flexgate check — {}\n\n", r.config));
    for f in &r.findings {
        o.push_str(&format!("{} {}: {}\n", f.level.tag(), f.what, f.detail));
    }
    for c in &r.certificates {
        o.push_str(&format!(
            "\n  {} certificate: {} · not after {} · SHA-256 {}\n",
            c.role, c.subject, c.not_after, c.sha256_fingerprint
        ));
    }
    o.push_str(&render_flex_console(&r.flex_console, &r.certificate_pem));
    let ip = &r.identity_provider;
    o.push_str(&format!(
        "\n== {} (provider preset {}: {}) ==\n  Roles from               : {}\n",
        ip.title, ip.provider, ip.reason, ip.roles_from
    ));
    for (n, step) in ip.steps.iter().enumerate() {
        o.push_str(&format!("  {}. {step}\n", n + 1));
    }
    // Generic keeps the Auth0 section when a namespaced roles claim shows an Action is wanted.
    if ip.provider != "auth0" && !(ip.provider == "generic" && r.auth0.post_login_action.is_some())
    {
        o.push_str(if r.failed() {
            "\nresult: FAILED\n"
        } else {
            "\nresult: ok\n"
        });
        return o;
    }
    o.push_str("\n== Auth0 (your application's settings) ==\n");
    o.push_str(&format!(
        "  Allowed Callback URLs    : {}\n",
        r.auth0.allowed_callback_url
    ));
    match &r.auth0.post_login_action {
        Some(a) => {
            o.push_str("  Post-login Action (Actions → Library → Build Custom; add it to the Login flow):\n\n");
            for l in a.lines() {
                o.push_str(&format!("    {l}\n"));
            }
        }
        None => o.push_str("  Roles: no namespaced roles claim is mapped; make sure the ID token or userinfo carries the claim [sp.attributes].roles names.\n"),
    }
    o.push_str(if r.failed() {
        "\nresult: FAILED\n"
    } else {
        "\nresult: ok\n"
    });
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_listener_outside_private_addresses_warns() {
        let level = |a: Option<&str>| admin_finding(a.map(|a| a.parse().unwrap())).level;
        assert_eq!(level(None), Level::Ok);
        for private in [
            "127.0.0.1:9090",
            "10.1.2.3:9090",
            "192.168.0.5:9090",
            "[::1]:9090",
            "[fd00::5]:9090",
        ] {
            assert_eq!(level(Some(private)), Level::Ok, "{private}");
        }
        for open in [
            "0.0.0.0:9090",
            "[::]:9090",
            "203.0.113.7:9090",
            "[2001:db8::1]:9090",
        ] {
            assert_eq!(level(Some(open)), Level::Warn, "{open}");
        }
    }
}
