//! Directory lookups a login may need besides the ID token: a person's groups from Microsoft
//! Graph (Entra ID's groups overage, [`graph`]) and from Google Cloud Identity ([`google`]).
//! Each is a small client with its own error type; `login` decides when one applies (through
//! the upstream preset) and maps the groups through `[sp.role_map]`.

pub mod google;
pub mod graph;
