//! Google Workspace: the `hd` claim must be `[upstream] hosted_domain` (any Google account can
//! sign in to accounts.google.com), and groups come from the Cloud Identity API with a
//! service-account key.

use super::{host_within, Directory, Preset};

pub(super) static PRESET: Preset = Preset {
    name: "google",
    title: "Google Workspace",
    attributes: &[
        ("email", "email"),
        ("full_name", "name"),
        ("image_url", "picture"),
    ],
    groups_claims: &["groups"],
    directory: Directory::CloudIdentity,
    connection: false,
    hosted_domain: true,
    steps: &[
        "Google Cloud console → APIs & Services → Credentials → Create OAuth client ID → Web application; Authorized redirect URI: {callback}",
        "set [upstream] hosted_domain to your Workspace domain: only its accounts get in",
        "for groups: enable the Cloud Identity API, create a service account with a JSON key, give it the Groups Reader admin role in the Admin console, and set [upstream] google_service_account_key",
        "map group email addresses to Flex roles in [sp.role_map], e.g. \"flex-agents@example.com\" = [\"agent\"]",
    ],
    detect: |issuer| {
        host_within(issuer, "accounts.google.com")
            .then(|| "the issuer is accounts.google.com".to_string())
    },
};
