//! Directory lookups a login may need besides the ID token: a person's groups from Microsoft
//! Graph (Entra ID's groups overage, [`graph`]) and from Google Cloud Identity ([`google`]).
//! Each is a small client with its own error type; `login` decides when one applies (through
//! the upstream preset) and maps the groups through `[sp.role_map]`.

pub mod google;
pub mod graph;

use std::sync::Arc;

/// A directory lookup that failed; each names its cause and fix.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("Google Cloud Identity: {0}")]
    Google(#[from] google::GoogleError),
    #[error("Microsoft Graph: {0}")]
    Graph(#[from] graph::GraphError),
}

impl DirectoryError {
    pub fn is_timeout(&self) -> bool {
        match self {
            DirectoryError::Google(e) => e.is_timeout(),
            DirectoryError::Graph(e) => e.is_timeout(),
        }
    }

    /// Which directory, for pages and logs.
    pub fn directory(&self) -> &'static str {
        match self {
            DirectoryError::Google(_) => "Google Cloud Identity",
            DirectoryError::Graph(_) => "Microsoft Graph",
        }
    }
}

/// The directory clients a configuration needs, built once (keys parsed once).
#[derive(Default, Clone)]
pub struct Directories {
    pub google: Option<Arc<google::CloudIdentity>>,
    pub graph: Option<Arc<graph::Graph>>,
}

impl std::fmt::Debug for Directories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directories")
            .field("google", &self.google.is_some())
            .field("graph", &self.graph.is_some())
            .finish()
    }
}

impl Directories {
    /// The clients `[upstream]` asks for: Cloud Identity with the service-account key (read and
    /// parsed here, once); Graph with the upstream client's own credentials.
    pub fn build(up: &crate::config::UpstreamConfig) -> Result<Directories, DirectoryError> {
        let google = match &up.google {
            None => None,
            Some(g) => {
                let sa = google::ServiceAccount::from_file(&g.service_account_key)?;
                let ci = google::CloudIdentity::new(
                    sa,
                    google::GoogleConfig {
                        cloud_identity_url: g.cloud_identity_url.clone(),
                        token_url: g.token_url.clone(),
                        timeout: up.timeout,
                    },
                )?;
                Some(Arc::new(ci))
            }
        };
        let graph = match &up.graph {
            None => None,
            Some(g) => Some(Arc::new(graph::Graph::new(graph::GraphConfig {
                graph_url: g.graph_url.clone(),
                token_url: g.token_url.clone(),
                client_id: up.client_id.clone(),
                client_secret: up.client_secret.clone(),
                timeout: up.timeout,
            })?)),
        };
        Ok(Directories { google, graph })
    }
}
