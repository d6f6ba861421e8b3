//! Auth0: roles in `app_metadata.flex.roles` (through a post-login Action, or read from the
//! Management API with `[upstream.management]`), and the `connection` authorize parameter.

use super::{host_within, Directory, Preset};

pub(super) static PRESET: Preset = Preset {
    name: "auth0",
    title: "Auth0",
    attributes: &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
        ("roles", "app_metadata.flex.roles"),
    ],
    groups_claims: &["groups"],
    directory: Directory::Auth0Management,
    connection: true,
    hosted_domain: false,
    steps: &[
        "Applications → Create Application → Regular Web Application; Settings → Allowed Callback URLs: {callback}",
        "give agents roles in app_metadata.flex.roles (`flexgate roles set EMAIL agent`), then either add the post-login Action below or set [upstream.management] so flexgate reads them",
        "optional: upstream.connection limits the login to one Auth0 connection",
    ],
    detect: |issuer| {
        host_within(issuer, "auth0.com")
            .then(|| format!("the issuer's host {} is an Auth0 tenant", issuer.host_str().unwrap_or("")))
    },
};
