//! Claims → Flex attributes: the mapping of `[sp.attributes]`, Flex's role vocabulary, and the
//! rule that nobody gets an assertion without a role Flex knows. Pure.

use crate::config::{AttributeMapping, SpConfig};
use serde_json::{Map, Value};

/// Role values Flex understands (Flex docs: SSO configuration and Flex Insights roles).
pub const FLEX_ROLES: &[&str] = &[
    "admin",
    "supervisor",
    "agent",
    "wfo.full_access",
    "wfo.team_leader",
    "wfo.data_analyst",
    "wfo.data_auditor",
    "wfo.quality_manager",
    "wfo.quality_process_manager",
    "wfo.dashboard_viewer",
    "flex.readteams",
    "flex.readonlyadmin",
];

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
    #[error("the account has no Flex role (claim {claim:?}: {found})")]
    NoRole {
        claim: String,
        /// What was found, for the log and the page: "missing", or the dropped values.
        found: String,
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

/// Maps claims to the SP's attributes.
pub fn map(claims: &Map<String, Value>, sp: &SpConfig) -> Result<MappedUser, MapError> {
    map_attributes(claims, &sp.attributes, sp.kind.is_flex(), &sp.extra_roles)
}

/// The mapping itself; `flex_roles` turns on Flex's role rules.
pub fn map_attributes(
    claims: &Map<String, Value>,
    mapping: &[AttributeMapping],
    flex_roles: bool,
    extra_roles: &[String],
) -> Result<MappedUser, MapError> {
    let mut attributes = Vec::with_capacity(mapping.len());
    let mut dropped_roles = Vec::new();
    let mut missing = Vec::new();
    let mut name_id = None;
    for m in mapping {
        let raw = lookup(claims, &m.claim).map(values).unwrap_or_default();
        if m.saml_name == ROLES && flex_roles {
            let all = split_roles(raw);
            let (known, unknown): (Vec<String>, Vec<String>) = all.into_iter().partition(|r| {
                FLEX_ROLES.contains(&r.as_str()) || extra_roles.iter().any(|e| e == r)
            });
            if known.is_empty() {
                let found = if unknown.is_empty() {
                    "missing or empty".to_string()
                } else {
                    format!("only values Flex does not know: {}", unknown.join(", "))
                };
                return Err(MapError::NoRole {
                    claim: m.claim.clone(),
                    found,
                });
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
}
