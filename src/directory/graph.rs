//! Microsoft Graph: a person's transitive groups when Entra ID sends the groups overage.
