//! Any other certified OpenID provider: the standard claims, roles in `app_metadata.flex.roles`
//! (or the claim `[sp.attributes] roles` names), groups in `groups`.

use super::{Directory, Preset};

pub(super) static PRESET: Preset = Preset {
    name: "generic",
    title: "an OpenID provider",
    attributes: &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
        ("roles", "app_metadata.flex.roles"),
    ],
    groups_claims: &["groups"],
    directory: Directory::None,
    connection: true,
    hosted_domain: false,
    steps: &[
        "register a confidential client (authorization code flow, client_secret_basic or client_secret_post) with the redirect URI {callback}",
        "send Flex roles in a claim and name it in [sp.attributes] roles, or send groups in `groups` and map them in [sp.role_map]",
    ],
    detect: |_| None,
};
