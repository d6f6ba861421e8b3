//! Google Cloud Identity: a person's transitive groups (Google Workspace preset).
