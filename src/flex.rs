//! Claims → Flex attributes: the mapping of `[sp.attributes]`, groups → roles (`[sp.role_map]`),
//! and the rule that nobody gets an assertion without a role Flex knows. Pure.

use crate::config::{AttributeMapping, RoleMap, SpConfig};
use serde_json::{Map, Value};

pub use crate::flex_roles::FLEX_ROLES;

/// The SAML attribute that carries roles.
pub const ROLES: &str = "roles";

/// The person as the SP will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedUser {
    /// The NameID (the email).
    pub name_id: String,
    /// `(SAML attribute name, values)` in config order; absent claims are left out.
    pub attributes: Vec<(String, Vec<String>)>,
    /// Role values dropped because Flex does not know them (for a warning in the log).
    pub dropped_roles: Vec<String>,
    /// Attributes whose claim was absent (for the log).
    pub missing: Vec<String>,
}

/// Why no assertion can be made for this person.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("the account has no email address (claim {claim:?} is missing or empty)")]
    NoEmail { claim: String },
    #[error("the account has no Flex role (claim {claim:?}: {found}){}", groups.as_ref().map(|g| format!("; none of its groups maps to a role ({})", groups_shown(g))).unwrap_or_default())]
    NoRole {
        claim: String,
        /// What was found, for the log and the page: "missing", or the dropped values.
        found: String,
        /// With `[sp.role_map]`: the groups the IdP sent (none of which maps).
        groups: Option<Vec<String>>,
    },
}

/// Looks a claim up: the exact name first (namespaced URL claims contain dots), then as a
/// dotted path into nested objects.
pub fn lookup<'a>(claims: &'a Map<String, Value>, claim: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(claim) {
        return Some(v);
    }
    let mut parts = claim.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim's values: a scalar is one value, an array of scalars several; objects and nulls none.
pub fn values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// Roles arrive as an array or as one comma-separated string; both become trimmed,
/// de-duplicated values.
pub fn split_roles(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in raw.iter().flat_map(|s| s.split(',')) {
        let r = r.trim();
        if !r.is_empty() && !out.iter().any(|o| o == r) {
            out.push(r.to_string());
        }
    }
    out
}

/// How many groups a no-role page or log line names.
pub const GROUPS_SHOWN: usize = 10;
/// Characters of one group name shown.
const GROUP_CHARS_SHOWN: usize = 80;

/// The groups, as a page or log line shows them: at most [`GROUPS_SHOWN`], each cut to a
/// readable length, Debug-quoted (a newline in a group cannot forge a log line), "none" if empty.
pub fn groups_shown(groups: &[String]) -> String {
    if groups.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<String> = groups
        .iter()
        .take(GROUPS_SHOWN)
        .map(|g| {
            format!(
                "{:?}",
                g.chars().take(GROUP_CHARS_SHOWN).collect::<String>()
            )
        })
        .collect();
    if groups.len() > GROUPS_SHOWN {
        shown.push(format!("and {} more", groups.len() - GROUPS_SHOWN));
    }
    shown.join(", ")
}

/// The person's groups: the values of the role map's claims (each a list, or one value), in
/// claim order, de-duplicated — linear in the number of groups (a directory may give 10,000).
pub fn groups(claims: &Map<String, Value>, role_map: &RoleMap) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    role_map
        .claims
        .iter()
        .filter_map(|c| lookup(claims, c))
        .flat_map(values)
        .filter(|g| seen.insert(g.clone()))
        .collect()
}

/// The roles `groups` map to, in the map's order, de-duplicated.
pub fn roles_from_groups(role_map: &RoleMap, groups: &[String]) -> Vec<String> {
    let held: std::collections::HashSet<&str> = groups.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::new();
    for (_, roles) in role_map
        .entries
        .iter()
        .filter(|(g, _)| held.contains(g.as_str()))
    {
        for r in roles {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// Maps claims to the SP's attributes; with `[sp.role_map]`, roles from the person's groups are
/// added to the roles the `roles` mapping gives.
pub fn map(claims: &Map<String, Value>, sp: &SpConfig) -> Result<MappedUser, MapError> {
    let from_groups = sp.role_map.as_ref().map(|rm| {
        let g = groups(claims, rm);
        (roles_from_groups(rm, &g), g)
    });
    map_with(
        claims,
        &sp.attributes,
        sp.kind.is_flex(),
        &sp.extra_roles,
        from_groups
            .as_ref()
            .map(|(r, g)| (r.as_slice(), g.as_slice())),
        sp.role_map
            .as_ref()
            .and_then(|rm| rm.claims.first())
            .map(String::as_str),
    )
}

/// The mapping itself; `flex_roles` turns on Flex's role rules.
pub fn map_attributes(
    claims: &Map<String, Value>,
    mapping: &[AttributeMapping],
    flex_roles: bool,
    extra_roles: &[String],
) -> Result<MappedUser, MapError> {
    map_with(claims, mapping, flex_roles, extra_roles, None, None)
}

/// Direct roles (split, de-duplicated) plus `added`, then split into known and unknown.
fn sort_roles(
    direct: Vec<String>,
    added: &[String],
    extra_roles: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut all = split_roles(direct);
    for r in added {
        if !all.contains(r) {
            all.push(r.clone());
        }
    }
    all.into_iter()
        .partition(|r| crate::flex_roles::is_known(r, extra_roles))
}

/// `from_groups`: the roles the person's groups map to, and the groups (with a role map);
/// `groups_claim` names the claim when no `roles` mapping exists.
fn map_with(
    claims: &Map<String, Value>,
    mapping: &[AttributeMapping],
    flex_roles: bool,
    extra_roles: &[String],
    from_groups: Option<(&[String], &[String])>,
    groups_claim: Option<&str>,
) -> Result<MappedUser, MapError> {
    let added = from_groups.map(|(r, _)| r).unwrap_or_default();
    let no_role = |claim: &str, unknown: &[String]| MapError::NoRole {
        claim: claim.to_string(),
        found: if unknown.is_empty() {
            "missing or empty".to_string()
        } else {
            format!("only values Flex does not know: {}", unknown.join(", "))
        },
        groups: from_groups.map(|(_, g)| g.to_vec()),
    };
    let mut attributes = Vec::with_capacity(mapping.len());
    let mut dropped_roles = Vec::new();
    let mut missing = Vec::new();
    let mut name_id = None;
    for m in mapping {
        let raw = lookup(claims, &m.claim).map(values).unwrap_or_default();
        if m.saml_name == ROLES && flex_roles {
            let (known, unknown) = sort_roles(raw, added, extra_roles);
            if known.is_empty() {
                return Err(no_role(&m.claim, &unknown));
            }
            dropped_roles = unknown;
            attributes.push((m.saml_name.clone(), known));
            continue;
        }
        if m.saml_name == "email" {
            let email = raw
                .first()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            match email {
                Some(e) => name_id = Some(e),
                None => {
                    return Err(MapError::NoEmail {
                        claim: m.claim.clone(),
                    })
                }
            }
        }
        if raw.is_empty() {
            missing.push(m.saml_name.clone());
            continue;
        }
        attributes.push((m.saml_name.clone(), raw));
    }
    let name_id = name_id.ok_or(MapError::NoEmail {
        claim: "email".into(),
    })?;
    // No `roles` mapping (allowed with a role map): the roles come from the groups alone.
    if flex_roles && from_groups.is_some() && !mapping.iter().any(|m| m.saml_name == ROLES) {
        let (known, _) = sort_roles(Vec::new(), added, extra_roles);
        if known.is_empty() {
            return Err(no_role(groups_claim.unwrap_or(ROLES), &[]));
        }
        attributes.push((ROLES.to_string(), known));
    }
    // Flex requires full_name (error 45050 otherwise): fall back to the email.
    if flex_roles
        && !attributes.iter().any(|(n, _)| n == "full_name")
        && mapping.iter().any(|m| m.saml_name == "full_name")
    {
        attributes.push(("full_name".into(), vec![name_id.clone()]));
    }
    Ok(MappedUser {
        name_id,
        attributes,
        dropped_roles,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(pairs: &[(&str, &str)]) -> Vec<AttributeMapping> {
        pairs
            .iter()
            .map(|(a, c)| AttributeMapping {
                saml_name: a.to_string(),
                claim: c.to_string(),
            })
            .collect()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    const DEFAULT: &[(&str, &str)] = &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
        ("roles", "app_metadata.flex.roles"),
    ];

    #[test]
    fn maps_nested_roles_and_profile() {
        let c = claims(
            json!({"email":"a@x.com","name":"Ada","picture":"https://p/a.png","app_metadata":{"flex":{"roles":["agent","supervisor"]}}}),
        );
        let m = map_attributes(&c, &mapping(DEFAULT), true, &[]).unwrap();
        assert_eq!(m.name_id, "a@x.com");
        assert_eq!(
            m.attributes,
            vec![
                ("email".into(), vec!["a@x.com".into()]),
                ("full_name".into(), vec!["Ada".into()]),
                ("image_url".into(), vec!["https://p/a.png".into()]),
                ("roles".into(), vec!["agent".into(), "supervisor".into()]),
            ]
        );
    }

    #[test]
    fn whole_claim_name_wins_over_dotted_path() {
        let c = claims(
            json!({"email":"a@x.com","name":"A","https://example.com/flex_roles":"admin, agent ,admin"}),
        );
        let m = map_attributes(
            &c,
            &mapping(&[
                ("email", "email"),
                ("full_name", "name"),
                ("roles", "https://example.com/flex_roles"),
            ]),
            true,
            &[],
        )
        .unwrap();
        assert_eq!(
            m.attributes[2],
            ("roles".into(), vec!["admin".into(), "agent".into()])
        );
    }

    #[test]
    fn unknown_roles_are_dropped_and_reported() {
        let c = claims(
            json!({"email":"a@x.com","name":"A","app_metadata":{"flex":{"roles":["agent","root"]}}}),
        );
        let m = map_attributes(&c, &mapping(DEFAULT), true, &[]).unwrap();
        assert_eq!(m.dropped_roles, vec!["root".to_string()]);
        let extra = vec!["root".to_string()];
        let m = map_attributes(&c, &mapping(DEFAULT), true, &extra).unwrap();
        assert!(m.dropped_roles.is_empty());
    }

    #[test]
    fn no_role_is_refused() {
        let c = claims(json!({"email":"a@x.com","name":"A"}));
        assert!(matches!(
            map_attributes(&c, &mapping(DEFAULT), true, &[]),
            Err(MapError::NoRole { .. })
        ));
        let c = claims(json!({"email":"a@x.com","app_metadata":{"flex":{"roles":["owner"]}}}));
        match map_attributes(&c, &mapping(DEFAULT), true, &[]) {
            Err(MapError::NoRole { found, .. }) => assert!(found.contains("owner")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_email_is_refused_and_full_name_falls_back() {
        let c = claims(json!({"name":"A","app_metadata":{"flex":{"roles":["agent"]}}}));
        assert!(matches!(
            map_attributes(&c, &mapping(DEFAULT), true, &[]),
            Err(MapError::NoEmail { .. })
        ));
        let c = claims(json!({"email":"a@x.com","app_metadata":{"flex":{"roles":["agent"]}}}));
        let m = map_attributes(&c, &mapping(DEFAULT), true, &[]).unwrap();
        assert!(m
            .attributes
            .contains(&("full_name".into(), vec!["a@x.com".into()])));
        assert_eq!(
            m.missing,
            vec!["full_name".to_string(), "image_url".to_string()]
        );
    }

    fn role_map(entries: &[(&str, &[&str])]) -> RoleMap {
        RoleMap {
            claims: vec!["groups".into()],
            entries: entries
                .iter()
                .map(|(g, r)| (g.to_string(), r.iter().map(|x| x.to_string()).collect()))
                .collect(),
        }
    }

    fn sp_with(attrs: &[(&str, &str)], rm: Option<RoleMap>) -> SpConfig {
        SpConfig {
            name: "flex".into(),
            kind: crate::config::SpKind::FlexEnhanced,
            entity_id: "urn:flex:x".into(),
            acs_url: "https://acs".into(),
            sign: crate::saml::sign::SignMode::Response,
            default_relay_state: None,
            attributes: mapping(attrs),
            extra_roles: vec![],
            role_map: rm,
            request_cert: None,
            want_signed_requests: false,
            allow_sha1_requests: false,
            mfa: crate::mfa::MfaMode::Never,
        }
    }

    const OKTA: &[(&str, &str)] = &[("email", "email"), ("full_name", "name")];

    #[test]
    fn groups_map_to_roles_added_to_direct_roles() {
        let rm = role_map(&[
            ("Flex Agents", &["agent"]),
            ("Flex Supervisors", &["supervisor", "wfo.team_leader"]),
            ("Everyone", &["agent"]),
        ]);
        // Groups only (no roles mapping): roles from the map, de-duplicated, in the map's order.
        let sp = sp_with(OKTA, Some(rm.clone()));
        let c = claims(
            json!({"email":"a@x.com","name":"A","groups":["Everyone","Flex Supervisors","Other"]}),
        );
        let m = map(&c, &sp).unwrap();
        assert_eq!(
            m.attributes.last().unwrap(),
            &(
                "roles".to_string(),
                vec![
                    "supervisor".into(),
                    "wfo.team_leader".into(),
                    "agent".into()
                ]
            )
        );
        // A direct role and a group role: both, the direct one first.
        let sp = sp_with(DEFAULT, Some(rm.clone()));
        let c = claims(
            json!({"email":"a@x.com","name":"A","groups":"Flex Agents","app_metadata":{"flex":{"roles":["admin"]}}}),
        );
        let m = map(&c, &sp).unwrap();
        let roles = m
            .attributes
            .iter()
            .find(|(n, _)| n == ROLES)
            .unwrap()
            .1
            .clone();
        assert_eq!(roles, vec!["admin".to_string(), "agent".to_string()]);
        // Groups are matched exactly.
        let sp = sp_with(OKTA, Some(rm));
        let c = claims(json!({"email":"a@x.com","groups":["flex agents"]}));
        assert!(matches!(map(&c, &sp), Err(MapError::NoRole { .. })));
        // A dotted path (Keycloak-like) works as for any claim.
        let rm = RoleMap {
            claims: vec!["realm_access.roles".into()],
            ..role_map(&[("flex-agent", &["agent"])])
        };
        let c = claims(json!({"email":"a@x.com","realm_access":{"roles":["flex-agent"]}}));
        assert!(map(&c, &sp_with(OKTA, Some(rm))).is_ok());
        // Several claims are merged: Keycloak's realm roles, client roles and groups.
        let rm = RoleMap {
            claims: vec![
                "realm_access.roles".into(),
                "resource_access.flexgate.roles".into(),
                "groups".into(),
            ],
            ..role_map(&[
                ("flex-agent", &["agent"]),
                ("flex-sup", &["supervisor"]),
                ("/Flex Admins", &["admin"]),
            ])
        };
        let c = claims(json!({
            "email": "a@x.com",
            "realm_access": {"roles": ["offline_access", "flex-agent"]},
            "resource_access": {"flexgate": {"roles": ["flex-sup"]}, "other": {"roles": ["flex-admin"]}},
            "groups": ["/Flex Admins", "flex-agent"]
        }));
        assert_eq!(
            groups(&c, &rm),
            ["offline_access", "flex-agent", "flex-sup", "/Flex Admins"]
        );
        let m = map(&c, &sp_with(OKTA, Some(rm))).unwrap();
        let roles = m
            .attributes
            .iter()
            .find(|(n, _)| n == "roles")
            .map(|(_, v)| v.clone());
        assert_eq!(
            roles,
            Some(vec![
                "agent".to_string(),
                "supervisor".into(),
                "admin".into()
            ])
        );
    }

    #[test]
    fn no_mapped_group_names_the_groups_seen() {
        let rm = role_map(&[("Flex Agents", &["agent"])]);
        let sp = sp_with(OKTA, Some(rm.clone()));
        let many: Vec<String> = (0..25).map(|i| format!("g{i}")).collect();
        let c = claims(json!({"email":"a@x.com","groups": many}));
        match map(&c, &sp) {
            Err(e @ MapError::NoRole { .. }) => {
                let MapError::NoRole { claim, groups, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(claim, "groups");
                assert_eq!(groups.as_ref().unwrap().len(), 25);
                let text = e.to_string();
                assert!(text.contains("\"g9\", and 15 more"), "{text}");
                assert!(!text.contains("g10"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // No groups at all.
        let c = claims(json!({"email":"a@x.com"}));
        match map(&c, &sp) {
            Err(MapError::NoRole { groups, .. }) => assert_eq!(groups, Some(vec![])),
            other => panic!("{other:?}"),
        }
        // Without a role map, nothing about groups.
        let sp = sp_with(DEFAULT, None);
        match map(&c, &sp) {
            Err(MapError::NoRole { groups, .. }) => assert_eq!(groups, None),
            other => panic!("{other:?}"),
        }
        assert_eq!(groups_shown(&[]), "none");
        assert_eq!(groups_shown(&["a\nb".into()]), "\"a\\nb\"");
    }
}
