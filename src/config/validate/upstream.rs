//! `[upstream]` and `[upstream.management]`: the OpenID Connect provider.

use super::Problems;
use crate::config::raw::{RawManagement, RawUpstream};
use crate::config::{
    https_or_loopback, GoogleSettings, GraphSettings, ManagementConfig, Secret, TokenAuthMethod,
    UpstreamConfig,
};
use crate::provider::{self, Directory, Preset};
use url::Url;

/// `[upstream]`, and the provider preset in force (generic when it cannot be told: the
/// problem is recorded), which the `[[sp]]` validator needs for its defaults.
pub(super) fn upstream(
    u: RawUpstream,
    p: &mut Problems,
) -> (Option<UpstreamConfig>, &'static Preset) {
    let explicit = match u.provider.as_deref() {
        None => Some(None),
        Some(v) => match provider::by_name(v) {
            Some(preset) => Some(Some(preset)),
            None => {
                p.add(
                    "upstream.provider",
                    format!("is {v:?}"),
                    format!(
                        "use one of {}, or leave it out to follow the issuer",
                        provider::names()
                    ),
                );
                None
            }
        },
    };
    let issuer_url = Url::parse(&u.issuer).ok();
    let (provider, provider_reason) = match (explicit, &issuer_url) {
        (Some(Some(e)), _) => (e, "set by [upstream] provider".to_string()),
        (Some(None), Some(url)) if u.management.is_some() => {
            let found = provider::detect(url);
            match provider::owner(|p| p.directory == Directory::Auth0Management) {
                Some(m) if found.0 == provider::fallback() => (
                    m,
                    "[upstream.management] is set (the Auth0 Management API)".to_string(),
                ),
                _ => found,
            }
        }
        (Some(None), Some(url)) => provider::detect(url),
        _ => (provider::fallback(), "no preset could be told".to_string()),
    };
    let preset = provider;
    let config = upstream_config(u, preset, provider_reason, explicit.is_some(), p);
    (config, preset)
}

fn upstream_config(
    u: RawUpstream,
    preset: &'static Preset,
    provider_reason: String,
    provider_ok: bool,
    p: &mut Problems,
) -> Option<UpstreamConfig> {
    let issuer = match https_or_loopback(&u.issuer) {
        Ok(url) => Some(url),
        Err(problem) => {
            p.add("upstream.issuer", problem, "write the issuer exactly as the provider's discovery document says, e.g. \"https://example.us.auth0.com/\" (Auth0 keeps the trailing slash)");
            None
        }
    };
    let mut ok = true;
    if u.client_id.trim().is_empty() {
        p.add(
            "upstream.client_id",
            "is empty",
            "copy the Client ID of the upstream application",
        );
        ok = false;
    }
    if u.client_secret.is_empty() {
        p.add(
            "upstream.client_secret",
            "is empty",
            "set it, e.g. client_secret = \"${FLEXGATE_CLIENT_SECRET}\" and export that variable",
        );
        ok = false;
    }
    let scopes = scopes(u.scopes, p);
    let token_auth_method = match u.token_auth_method.as_deref() {
        None => Some(None),
        Some(v) => p
            .variant::<TokenAuthMethod>(
                "upstream.token_auth_method",
                v,
                "use \"client_secret_basic\" or \"client_secret_post\", or leave it out to follow discovery",
            )
            .map(Some),
    };
    let timeout = p.secs("upstream.timeout_secs", u.timeout_secs, 10, 1..=120);
    let connection = u.connection.filter(|c| !c.is_empty());
    if connection.is_some() && !preset.connection {
        p.add(
            "upstream.connection",
            format!("is Auth0's connection parameter, and the provider is {} ({})", preset.title, provider_reason),
            "remove it, or set [upstream] provider = \"auth0\" if this is an Auth0 tenant behind a custom domain",
        );
        ok = false;
    }
    let management = match (u.management, &issuer) {
        (None, _) => Some(None),
        (Some(_), _) if preset.directory != Directory::Auth0Management => {
            p.add(
                "upstream.management",
                format!("is the Auth0 Management API, and the provider is {} ({})", preset.title, provider_reason),
                "remove [upstream.management], or set [upstream] provider = \"auth0\" if this is an Auth0 tenant behind a custom domain",
            );
            None
        }
        (Some(m), Some(issuer)) => management(m, issuer, p).map(Some),
        (Some(_), None) => None,
    };
    let hosted_domain = hosted_domain(u.hosted_domain, preset, p);
    let graph = graph(&u.issuer, u.graph_url, u.graph_token_url, preset, p);
    let google = google(
        u.google_service_account_key,
        u.google_token_url,
        u.cloud_identity_url,
        preset,
        p,
    );
    (ok && provider_ok).then_some(())?;
    issuer?;
    Some(UpstreamConfig {
        provider: preset,
        provider_reason,
        hosted_domain: hosted_domain?,
        graph: graph?,
        google: google?,
        management: management?,
        issuer: u.issuer,
        client_id: u.client_id,
        client_secret: Secret::new(u.client_secret),
        connection,
        scopes: scopes?,
        token_auth_method: token_auth_method?,
        timeout: timeout?,
        userinfo: u.userinfo.unwrap_or(true),
    })
}

fn scopes(raw: Option<Vec<String>>, p: &mut Problems) -> Option<Vec<String>> {
    let scopes = raw.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    let mut ok = true;
    if !scopes.iter().any(|s| s == "openid") {
        p.add(
            "upstream.scopes",
            "does not include \"openid\"",
            "add \"openid\" (OpenID Connect needs it)",
        );
        ok = false;
    }
    if scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        p.add(
            "upstream.scopes",
            "has an empty scope or one with spaces",
            "list one scope per string",
        );
        ok = false;
    }
    ok.then_some(scopes)
}

/// `[upstream.management]`; its URL defaults to the issuer's scheme and host.
fn management(m: RawManagement, issuer: &Url, p: &mut Problems) -> Option<ManagementConfig> {
    let key = "upstream.management.url";
    let url = m
        .url
        .unwrap_or_else(|| format!("{}://{}", issuer.scheme(), issuer.host_str().unwrap_or("")));
    let url_ok = match https_or_loopback(&url) {
        Err(problem) => {
            p.add(key, problem, "write your tenant's canonical domain, e.g. \"https://example.us.auth0.com\" (not a custom domain)");
            false
        }
        Ok(parsed) if parsed.path() != "/" || parsed.query().is_some() => {
            p.add(
                key,
                "has a path or query",
                "write only scheme and host, e.g. \"https://example.us.auth0.com\"",
            );
            false
        }
        Ok(_) => true,
    };
    let credentials_ok = !m.client_id.is_empty() && !m.client_secret.is_empty();
    if !credentials_ok {
        p.add("upstream.management", "has an empty client_id or client_secret", "create a Machine-to-Machine application authorized for the Auth0 Management API with the read:users scope, and copy its credentials");
    }
    let cache_ttl = p.secs("upstream.management.cache_secs", m.cache_secs, 60, 0..=3600);
    let prefetch = prefetch(m.prefetch_secs, p);
    (url_ok && credentials_ok).then_some(())?;
    Some(ManagementConfig {
        url: url.trim_end_matches('/').to_string(),
        client_id: m.client_id,
        client_secret: Secret::new(m.client_secret),
        cache_ttl: cache_ttl?,
        prefetch: prefetch?,
    })
}

/// `upstream.management.prefetch_secs`: 0 turns the bulk read of roles off.
fn prefetch(v: Option<u64>, p: &mut Problems) -> Option<Option<std::time::Duration>> {
    const KEY: &str = "upstream.management.prefetch_secs";
    match v {
        Some(0) => Some(None),
        Some(v) if !PREFETCH_RANGE.contains(&v) => {
            let (lo, hi) = (PREFETCH_RANGE.start(), PREFETCH_RANGE.end());
            p.add(
                KEY,
                format!("is {v}, outside {lo}..={hi}"),
                format!("pick a value between {lo} and {hi} seconds, or 0 to read roles at each login only"),
            );
            None
        }
        v => Some(Some(std::time::Duration::from_secs(v.unwrap_or(300)))),
    }
}

/// How often every user's roles may be read in bulk: not more than every 5 s, at least daily.
const PREFETCH_RANGE: std::ops::RangeInclusive<u64> = 5..=86_400;

/// A key only presets with a capability read: under another preset it is a mistake.
fn only_for(
    key: &str,
    set: bool,
    preset: &Preset,
    has: fn(&Preset) -> bool,
    p: &mut Problems,
) -> bool {
    if set && !has(preset) {
        let owner = provider::owner(has).unwrap_or(preset);
        p.add(
            key,
            format!(
                "only applies to the {} preset, and the provider is {}",
                owner.title, preset.title
            ),
            format!("remove it, or set [upstream] provider = {:?}", owner.name),
        );
        return false;
    }
    true
}

/// The capabilities keys depend on.
fn needs_hosted_domain(p: &Preset) -> bool {
    p.hosted_domain
}
fn reads_graph(p: &Preset) -> bool {
    p.directory == Directory::Graph
}
fn reads_cloud_identity(p: &Preset) -> bool {
    p.directory == Directory::CloudIdentity
}

/// `[upstream] hosted_domain`: required for Google (any Google account can sign in otherwise).
fn hosted_domain(v: Option<String>, preset: &Preset, p: &mut Problems) -> Option<Option<String>> {
    const KEY: &str = "upstream.hosted_domain";
    if !only_for(KEY, v.is_some(), preset, needs_hosted_domain, p) {
        return None;
    }
    if !preset.hosted_domain {
        return Some(None);
    }
    match v.map(|d| d.trim().to_ascii_lowercase()) {
        None => {
            p.add(KEY, format!("is not set, and the provider is {}: anyone with a Google account could sign in", preset.title), "set it to your Google Workspace domain, e.g. hosted_domain = \"example.com\"");
            None
        }
        Some(d)
            if d.is_empty()
                || !d.contains('.')
                || d.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') =>
        {
            p.add(
                KEY,
                format!("is {d:?}, not a domain name"),
                "write the Workspace's primary domain, e.g. \"example.com\"",
            );
            None
        }
        Some(d) => Some(Some(d)),
    }
}

/// A base URL: https (or loopback http), no query; the trailing slash dropped.
fn base_url(key: &str, v: &str, example: &str, p: &mut Problems) -> Option<String> {
    match https_or_loopback(v) {
        Err(problem) => {
            p.add(key, problem, format!("write e.g. \"{example}\""));
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            p.add(
                key,
                "has a query or fragment",
                format!("write e.g. \"{example}\""),
            );
            None
        }
        Ok(_) => Some(v.trim_end_matches('/').to_string()),
    }
}

/// `[upstream] graph_url` and `graph_token_url` (Entra ID only). The token URL defaults to the
/// tenant's v2.0 token endpoint, read off the issuer (`…/{tenant}/v2.0`).
fn graph(
    issuer: &str,
    url: Option<String>,
    token_url: Option<String>,
    preset: &Preset,
    p: &mut Problems,
) -> Option<Option<GraphSettings>> {
    let a = only_for("upstream.graph_url", url.is_some(), preset, reads_graph, p);
    let b = only_for(
        "upstream.graph_token_url",
        token_url.is_some(),
        preset,
        reads_graph,
        p,
    );
    (a && b).then_some(())?;
    if !reads_graph(preset) {
        return Some(None);
    }
    let graph_url = base_url(
        "upstream.graph_url",
        url.as_deref().unwrap_or(GRAPH_URL),
        GRAPH_URL,
        p,
    );
    const TOKEN_EXAMPLE: &str = "https://login.microsoftonline.com/TENANT-ID/oauth2/v2.0/token";
    let token_url = match token_url.or_else(|| entra_token_url(issuer)) {
        Some(t) => base_url("upstream.graph_token_url", &t, TOKEN_EXAMPLE, p),
        None => {
            p.add(
                "upstream.graph_token_url",
                format!("cannot be told from the issuer {issuer:?} (not https://login.microsoftonline.com/TENANT-ID/v2.0)"),
                format!("set it to the tenant's token endpoint, e.g. \"{TOKEN_EXAMPLE}\""),
            );
            None
        }
    };
    Some(Some(GraphSettings {
        graph_url: graph_url?,
        token_url: token_url?,
    }))
}

/// `https://{host}/{tenant}/v2.0` → `https://{host}/{tenant}/oauth2/v2.0/token`.
fn entra_token_url(issuer: &str) -> Option<String> {
    let base = issuer.trim_end_matches('/').strip_suffix("/v2.0")?;
    let url = Url::parse(base).ok()?;
    let tenant_only = url
        .path_segments()
        .is_some_and(|s| s.filter(|x| !x.is_empty()).count() == 1);
    (reads_graph(provider::detect(&url).0) && tenant_only)
        .then(|| format!("{base}/oauth2/v2.0/token"))
}

/// Microsoft Graph's default base URL.
pub const GRAPH_URL: &str = "https://graph.microsoft.com";
/// Google Cloud Identity's default base URL.
pub const CLOUD_IDENTITY_URL: &str = "https://cloudidentity.googleapis.com";

/// `[upstream] google_service_account_key`, `google_token_url`, `cloud_identity_url` (Google only).
fn google(
    key: Option<std::path::PathBuf>,
    token_url: Option<String>,
    url: Option<String>,
    preset: &Preset,
    p: &mut Problems,
) -> Option<Option<GoogleSettings>> {
    let a = only_for(
        "upstream.google_service_account_key",
        key.is_some(),
        preset,
        reads_cloud_identity,
        p,
    );
    let b = only_for(
        "upstream.google_token_url",
        token_url.is_some(),
        preset,
        reads_cloud_identity,
        p,
    );
    let c = only_for(
        "upstream.cloud_identity_url",
        url.is_some(),
        preset,
        reads_cloud_identity,
        p,
    );
    (a && b && c).then_some(())?;
    let Some(key) = key else {
        if token_url.is_some() || url.is_some() {
            p.add("upstream.google_service_account_key", "is not set, and google_token_url or cloud_identity_url is", "set google_service_account_key to the service account's JSON key file (groups are read with it), or remove the other two");
            return None;
        }
        return Some(None);
    };
    let key = p.path(&key);
    let key_ok = match std::fs::metadata(&key) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            p.add(
                "upstream.google_service_account_key",
                format!("{} is not a file", key.display()),
                "point it at the service account's JSON key file",
            );
            false
        }
        Err(e) => {
            p.add("upstream.google_service_account_key", format!("{} cannot be read: {e}", key.display()), "point it at the service account's JSON key file (IAM → Service accounts → Keys → Add key → JSON)");
            false
        }
    };
    let cloud_identity_url = base_url(
        "upstream.cloud_identity_url",
        url.as_deref().unwrap_or(CLOUD_IDENTITY_URL),
        CLOUD_IDENTITY_URL,
        p,
    );
    let token_url = match token_url {
        None => Some(None),
        Some(t) => base_url(
            "upstream.google_token_url",
            &t,
            "https://oauth2.googleapis.com/token",
            p,
        )
        .map(Some),
    };
    key_ok.then_some(())?;
    Some(Some(GoogleSettings {
        service_account_key: key,
        token_url: token_url?,
        cloud_identity_url: cloud_identity_url?,
    }))
}

/// Google sends no groups in its tokens: a role map needs the Cloud Identity lookup.
pub(super) fn groups_reachable(
    u: &UpstreamConfig,
    sps: &[crate::config::SpConfig],
    p: &mut Problems,
) {
    if !reads_cloud_identity(u.provider) || u.google.is_some() {
        return;
    }
    if let Some(sp) = sps.iter().find(|s| s.role_map.is_some()) {
        p.add(
            "upstream.google_service_account_key",
            format!("is not set, and [[sp]] {:?} maps groups to roles: Google ID tokens carry no groups", sp.name),
            "create a service account with a JSON key and the Groups Reader admin role, enable the Cloud Identity API, and set google_service_account_key to the key file",
        );
    }
}
