//! Flex's role vocabulary, a leaf both the config validator and the claim mapping read (so
//! `config` need not import `flex`, which imports `config`).

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

/// A role Flex knows, or one the SP's `extra_roles` adds.
pub fn is_known(role: &str, extra_roles: &[String]) -> bool {
    FLEX_ROLES.contains(&role) || extra_roles.iter().any(|e| e == role)
}
