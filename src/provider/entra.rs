//! Microsoft Entra ID: app roles in `roles`, group object ids in `groups`; past 200 groups
//! (the *groups overage*) the ID token carries `hasgroups` or `_claim_names.groups` instead,
//! and the groups are read from Microsoft Graph with the client's own credentials.

use super::{host_within, Directory, Preset};
use serde_json::{Map, Value};

pub(super) static PRESET: Preset = Preset {
    name: "entra",
    title: "Microsoft Entra ID",
    // Entra ID has no picture claim; `email` needs the optional claim (see the steps).
    attributes: &[("email", "email"), ("full_name", "name")],
    groups_claims: &["roles", "groups"],
    directory: Directory::Graph,
    connection: false,
    hosted_domain: false,
    steps: &[
        "App registrations → New registration; Redirect URI (Web): {callback}; Certificates & secrets → New client secret",
        "Token configuration → Add optional claim → ID → email; Add groups claim → Security groups (emitted as object ids), or define App roles and assign them",
        "API permissions → Microsoft Graph → Application → GroupMember.Read.All → Grant admin consent (read on the groups overage, past 200 groups)",
        "map app role values or group object ids to Flex roles in [sp.role_map]",
    ],
    detect: |issuer| {
        ["login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn"]
            .into_iter()
            .find(|d| issuer.host_str().is_some_and(|h| h.eq_ignore_ascii_case(d)))
            .or_else(|| host_within(issuer, "ciamlogin.com").then_some("ciamlogin.com"))
            .map(|d| format!("the issuer's host is {d} (Microsoft Entra ID)"))
    },
};

/// The ID token left the groups out because there are too many (Entra's *groups overage*):
/// it says `hasgroups: true` or points at them with `_claim_names.groups`.
pub fn groups_overage(claims: &Map<String, Value>) -> bool {
    claims.get("hasgroups").and_then(Value::as_bool) == Some(true)
        || claims
            .get("_claim_names")
            .and_then(Value::as_object)
            .is_some_and(|n| n.contains_key("groups"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn both_overage_shapes_are_seen_and_a_list_is_not_one() {
        assert!(groups_overage(&claims(
            serde_json::json!({"hasgroups": true})
        )));
        assert!(groups_overage(&claims(serde_json::json!({
            "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/t/users/o/getMemberObjects"}}
        }))));
        assert!(!groups_overage(&claims(
            serde_json::json!({"groups": ["a"]})
        )));
        assert!(!groups_overage(&claims(
            serde_json::json!({"hasgroups": false})
        )));
        assert!(!groups_overage(&claims(
            serde_json::json!({"hasgroups": "true"})
        )));
        assert!(!groups_overage(&claims(
            serde_json::json!({"_claim_names": {"roles": "src1"}})
        )));
    }
}
