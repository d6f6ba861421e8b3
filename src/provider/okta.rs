//! Okta: people's groups in the `groups` claim (a Groups claim filter on the app, or the
//! `groups` scope on an authorization server), mapped to Flex roles by `[sp.role_map]`.

use super::{host_within, Directory, Preset};

pub(super) static PRESET: Preset = Preset {
    name: "okta",
    title: "Okta",
    attributes: &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
    ],
    groups_claims: &["groups"],
    directory: Directory::None,
    connection: false,
    hosted_domain: false,
    steps: &[
        "Applications → Create App Integration → OIDC, Web Application; Sign-in redirect URI: {callback}; grant type Authorization Code",
        "Sign On → OpenID Connect ID Token → Groups claim type Filter, name `groups`, e.g. Starts with `Flex` (or add the `groups` scope to [upstream] scopes with a custom authorization server)",
        "map each group to Flex roles in [sp.role_map], e.g. \"Flex Agents\" = [\"agent\"]",
    ],
    detect: |issuer| {
        ["okta.com", "oktapreview.com"]
            .into_iter()
            .find(|d| host_within(issuer, d))
            .map(|d| format!("the issuer's host is under {d}"))
    },
};
