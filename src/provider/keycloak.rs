//! Keycloak: realm roles in `realm_access.roles`, the client's roles in
//! `resource_access.{client_id}.roles`, and groups in `groups` (a Group Membership mapper).

use super::{Directory, Preset};

pub(super) static PRESET: Preset = Preset {
    name: "keycloak",
    title: "Keycloak",
    attributes: &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
    ],
    groups_claims: &[
        "realm_access.roles",
        "resource_access.{client_id}.roles",
        "groups",
    ],
    directory: Directory::None,
    connection: false,
    hosted_domain: false,
    steps: &[
        "Clients → Create client → OpenID Connect, Client authentication on, Standard flow; Valid redirect URIs: {callback}",
        "give agents realm roles or roles of client {client_id}, or add a Group Membership mapper (claim name `groups`, Full group path off) to the client's dedicated scope",
        "map the role or group names to Flex roles in [sp.role_map]",
    ],
    detect: |issuer| {
        let mut segs = issuer.path_segments()?;
        segs.any(|s| s == "realms")
            .then(|| "the issuer's path has /realms/ (Keycloak)".to_string())
    },
};
