//! `[[sp]]`: the service providers, with the Flex presets resolved to their entity id and ACS
//! URL.

use super::Problems;
use crate::config::raw::RawSp;
use crate::config::{https_or_loopback, AttributeMapping, RoleMap, SpConfig, SpKind};
use crate::mfa::MfaMode;
use crate::provider::{self, Preset};
use crate::saml::sign::SignMode;

/// Every `[[sp]]`: at least one, names and entity ids unique.
/// What `[[sp]]` validation needs of `[upstream]`: the preset's default claims and groups.
pub(super) struct Upstream<'a> {
    pub(super) preset: &'static Preset,
    pub(super) client_id: &'a str,
}

pub(super) fn sps(raw: Vec<RawSp>, up: &Upstream, p: &mut Problems) -> Option<Vec<SpConfig>> {
    if raw.is_empty() {
        p.add("sp", "has no entry", "add an [[sp]] table for your Flex instance (kind = \"flex-enhanced\", flex_connection = \"JQ…\")");
        return None;
    }
    let n = raw.len();
    let mut sps: Vec<SpConfig> = Vec::with_capacity(n);
    for (i, s) in raw.into_iter().enumerate() {
        let Some(sp) = sp(s, i, up, p) else { continue };
        if sps.iter().any(|o| o.name == sp.name) {
            p.add(
                format!("sp[{i}].name"),
                format!("{:?} is used by two [[sp]] entries", sp.name),
                "give each service provider its own name",
            );
        } else if let Some(o) = sps.iter().find(|o| o.entity_id == sp.entity_id) {
            p.add(format!("sp[{i}]"), format!("has the entity id {:?}, which [[sp]] {:?} already has", sp.entity_id, o.name), "each service provider needs its own entity id (requests are matched by their Issuer)");
        } else {
            sps.push(sp);
        }
    }
    (sps.len() == n).then_some(sps)
}

fn sp(mut s: RawSp, i: usize, up: &Upstream, p: &mut Problems) -> Option<SpConfig> {
    let k = |name: &str| format!("sp[{i}].{name}");
    let name_ok = !s.name.is_empty()
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        p.add(
            k("name"),
            format!("is {:?}", s.name),
            "use letters, digits, - and _ (it appears in URLs: /saml/init/{name})",
        );
    }
    let kind = p.choice(
        &k("kind"),
        s.kind.as_deref(),
        SpKind::FlexEnhanced,
        "use \"flex-enhanced\", \"flex-legacy\" or \"generic\"",
    );
    let (entity_id, acs_url) = match kind {
        Some(kind) => urls(&s, kind, i, p),
        None => (None, None),
    };
    let sign = p.choice(
        &k("sign"),
        s.sign.as_deref(),
        SignMode::Response,
        "use \"response\" (Flex Enhanced), \"assertion\" or \"both\"",
    );
    // A role map with mistakes still counts here: its mistakes are reported, not a missing `roles`.
    let has_role_map = s.role_map.as_ref().is_some_and(|t| !t.is_empty());
    let role_map_entries = role_map(s.role_map.take(), &s.extra_roles, i, p);
    let attributes =
        kind.and_then(|kind| attributes(s.attributes, kind, has_role_map, up.preset, i, p));
    let (attributes, role_map) = match (attributes, role_map_entries) {
        (Some(a), Some(entries)) => {
            let (a, groups_claim) = take_groups(a);
            let role_map = (!entries.is_empty()).then(|| RoleMap {
                claims: match groups_claim {
                    Some(c) => vec![c],
                    None => provider::groups_claims(up.preset, up.client_id),
                },
                entries,
            });
            (Some(a), Some(role_map))
        }
        _ => (None, None),
    };
    let mfa = p.choice(
        &k("mfa"),
        s.mfa.as_deref(),
        MfaMode::Never,
        "use \"never\", \"always\" (every login needs a second factor) or \"on-request\" (when the AuthnRequest asks for it)",
    );
    let want_signed_requests = s.want_signed_requests.unwrap_or(s.request_cert.is_some());
    let signing_ok = !want_signed_requests || s.request_cert.is_some();
    if !signing_ok {
        p.add(
            k("want_signed_requests"),
            "is true, but no request_cert is configured to check the signatures with",
            "set request_cert to the service provider's signing certificate (PEM), or remove want_signed_requests",
        );
    }
    (name_ok && signing_ok).then_some(())?;
    Some(SpConfig {
        name: s.name,
        kind: kind?,
        entity_id: entity_id?,
        acs_url: acs_url?,
        sign: sign?,
        default_relay_state: s.default_relay_state,
        attributes: attributes?,
        extra_roles: s.extra_roles,
        role_map: role_map?,
        request_cert: s.request_cert.map(|c| p.path(&c)),
        want_signed_requests,
        allow_sha1_requests: s.allow_sha1_requests,
        mfa: mfa?,
    })
}

/// The entity id and ACS URL: `entity_id` / `acs_url` if set, else the preset of `kind`.
fn urls(s: &RawSp, kind: SpKind, i: usize, p: &mut Problems) -> (Option<String>, Option<String>) {
    let k = |name: &str| format!("sp[{i}].{name}");
    let (preset_entity, preset_acs) = match kind {
        SpKind::FlexEnhanced => enhanced_preset(s, i, p),
        SpKind::FlexLegacy => legacy_preset(s, i, p),
        SpKind::Generic => (None, None),
    };
    // A Flex kind whose preset failed has its problem recorded already.
    let preset_failed = kind.is_flex() && preset_entity.is_none();
    let entity_id = s.entity_id.clone().or(preset_entity);
    let entity_id = match entity_id {
        None if preset_failed => None,
        None => {
            p.add(
                k("entity_id"),
                "is missing (needed by kind = \"generic\")",
                "write the service provider's entity id (the Issuer of its AuthnRequests)",
            );
            None
        }
        Some(e) if e.is_empty() || e.trim() != e => {
            p.add(
                k("entity_id"),
                "is empty or has surrounding spaces",
                "write the service provider's entity id exactly",
            );
            None
        }
        Some(e) => Some(e),
    };
    let acs_url = match s.acs_url.clone().or(preset_acs) {
        None if preset_failed => None,
        None => {
            p.add(
                k("acs_url"),
                "is missing (needed by kind = \"generic\")",
                "write the service provider's Assertion Consumer Service URL",
            );
            None
        }
        Some(url) => match https_or_loopback(&url) {
            Ok(_) => Some(url),
            Err(problem) => {
                p.add(
                    k("acs_url"),
                    problem,
                    "write the https ACS URL of the service provider",
                );
                None
            }
        },
    };
    (entity_id, acs_url)
}

/// Flex Enhanced SSO: `urn:flex:JQ…` and Flex's login callback in `region`.
fn enhanced_preset(s: &RawSp, i: usize, p: &mut Problems) -> (Option<String>, Option<String>) {
    let k = |name: &str| format!("sp[{i}].{name}");
    let jq = match s.flex_connection.as_deref() {
        None => {
            p.add(k("flex_connection"), "is missing (needed by kind = \"flex-enhanced\")", "copy the SSO connection id (JQ followed by 32 hex digits) from Flex Console → Single Sign-On");
            None
        }
        Some(jq) if !is_sid(jq, "JQ") => {
            p.add(
                k("flex_connection"),
                format!("is {jq:?}, not JQ followed by 32 lowercase hex digits"),
                "copy the id from the ACS URL Flex Console shows (…/login/callback?connection=JQ…)",
            );
            None
        }
        Some(jq) => Some(jq),
    };
    let region = s.region.as_deref().unwrap_or("us1");
    let b = region.as_bytes();
    let region_ok = b.len() == 3
        && b[0].is_ascii_lowercase()
        && b[1].is_ascii_lowercase()
        && b[2].is_ascii_digit();
    if !region_ok {
        p.add(
            k("region"),
            format!("is {region:?}"),
            "use the Flex region id, e.g. \"us1\", \"ie1\" or \"au1\"",
        );
    }
    match jq {
        Some(jq) if region_ok => (
            Some(format!("urn:flex:{jq}")),
            Some(format!(
                "https://login.flex.{region}.twilio.com/login/callback?connection={jq}"
            )),
        ),
        _ => (None, None),
    }
}

/// Flex legacy SSO: Twilio IAM's URLs for the account.
fn legacy_preset(s: &RawSp, i: usize, p: &mut Problems) -> (Option<String>, Option<String>) {
    let key = format!("sp[{i}].account_sid");
    match s.account_sid.as_deref() {
        None => p.add(
            key,
            "is missing (needed by kind = \"flex-legacy\")",
            "copy the Account SID (AC followed by 32 hex digits) from the Twilio Console",
        ),
        Some(ac) if !is_sid(ac, "AC") => p.add(
            key,
            format!("is {ac:?}, not AC followed by 32 lowercase hex digits"),
            "copy the Account SID from the Twilio Console",
        ),
        Some(ac) => {
            return (
                Some(format!(
                    "https://iam.twilio.com/v1/Accounts/{ac}/saml2/metadata"
                )),
                Some(format!("https://iam.twilio.com/v1/Accounts/{ac}/saml2")),
            )
        }
    }
    (None, None)
}

/// A Twilio SID: `prefix` and 32 lowercase hex digits.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && s.starts_with(prefix)
        && s[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The `[sp.attributes]` key naming the groups claim: the role map's input, not a SAML attribute.
const GROUPS: &str = "groups";

/// Splits the `groups` mapping off the SAML attributes.
fn take_groups(attributes: Vec<AttributeMapping>) -> (Vec<AttributeMapping>, Option<String>) {
    let (groups, rest): (Vec<_>, Vec<_>) =
        attributes.into_iter().partition(|a| a.saml_name == GROUPS);
    (rest, groups.into_iter().next().map(|g| g.claim))
}

/// `[sp.role_map]`: each group maps to a non-empty list of roles Flex knows (or `extra_roles`).
/// Every mistake is recorded; `None` when there was one.
fn role_map(
    table: Option<toml::Table>,
    extra_roles: &[String],
    i: usize,
    p: &mut Problems,
) -> Option<Vec<(String, Vec<String>)>> {
    let before = p.found.len();
    let mut entries = Vec::new();
    for (group, v) in table.unwrap_or_default() {
        let key = format!("sp[{i}].role_map.{group:?}");
        let roles: Option<Vec<String>> = v
            .as_array()
            .and_then(|a| a.iter().map(|r| r.as_str().map(str::to_string)).collect());
        match roles {
            _ if group.is_empty() => p.add(
                &key,
                "is an empty group name",
                "write the group as the identity provider sends it (a name, or an Entra object id)",
            ),
            None => p.add(
                &key,
                "is not a list of role names",
                "write e.g. \"Flex Agents\" = [\"agent\"]",
            ),
            Some(r) if r.is_empty() => p.add(
                &key,
                "maps to no role",
                "list at least one Flex role, e.g. [\"agent\"], or remove the line",
            ),
            Some(r) => {
                let unknown: Vec<&String> = r
                    .iter()
                    .filter(|x| !crate::flex_roles::is_known(x, extra_roles))
                    .collect();
                if unknown.is_empty() {
                    entries.push((group, r));
                } else {
                    p.add(
                        &key,
                        format!("has role values Flex does not know: {}", unknown.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")),
                        "use admin, supervisor, agent, wfo.* or flex.* roles (or list the value in this [[sp]]'s extra_roles)",
                    );
                }
            }
        }
    }
    (p.found.len() == before).then_some(entries)
}

/// `[sp.attributes]` (else the provider preset's defaults): bare names mapped to non-empty
/// claims; `email` always, and `full_name` and `roles` for Flex (`roles` may be left out when
/// a role map gives the roles).
fn attributes(
    table: Option<toml::Table>,
    kind: SpKind,
    has_role_map: bool,
    preset: &Preset,
    i: usize,
    p: &mut Problems,
) -> Option<Vec<AttributeMapping>> {
    let before = p.found.len();
    let mut attributes = Vec::new();
    let defaulted = table.is_none();
    let table = table.unwrap_or_else(|| {
        preset
            .attributes
            .iter()
            .map(|(a, c)| ((*a).to_string(), toml::Value::String((*c).to_string())))
            .collect()
    });
    for (name, v) in table {
        let key = format!("sp[{i}].attributes.{name}");
        match v.as_str() {
            None => p.add(
                &key,
                "is not a string",
                "write the claim name, e.g. roles = \"https://example.com/flex_roles\"",
            ),
            Some("") => p.add(&key, "is empty", "write the claim name or dotted path"),
            Some(_)
                if name.is_empty()
                    || name.contains(char::is_whitespace)
                    || name.contains("://") =>
            {
                p.add(
                    &key,
                    "is not a bare attribute name",
                    "Flex wants bare names such as email, full_name, roles",
                )
            }
            Some(claim) => attributes.push(AttributeMapping {
                saml_name: name,
                claim: claim.to_string(),
            }),
        }
    }
    if p.found.len() > before {
        return None;
    }
    let missing = |n: &str| !attributes.iter().any(|a| a.saml_name == n);
    let key = format!("sp[{i}].attributes");
    if missing("email") {
        p.add(
            &key,
            "has no `email` (it is also the NameID)",
            "add email = \"email\"",
        );
    }
    if kind.is_flex() {
        let needed: &[&str] = if has_role_map {
            &["full_name"]
        } else {
            &["full_name", "roles"]
        };
        for required in needed.iter().copied().filter(|r| missing(r)) {
            if required == "roles" && defaulted {
                p.add(
                    format!("sp[{i}].role_map"),
                    format!("is not set, and {} sends no Flex roles of its own", preset.title),
                    format!("map the groups or roles people have at {} to Flex roles, e.g. [sp.role_map] \"Flex Agents\" = [\"agent\"] (or name the claim carrying Flex roles in [sp.attributes] roles)", preset.title),
                );
                continue;
            }
            p.add(
                &key,
                format!("has no `{required}`, which Flex requires"),
                format!("add {required} = \"<claim>\" (see the README's mapping section)"),
            );
        }
    }
    (p.found.len() == before).then_some(attributes)
}
