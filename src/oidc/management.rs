//! Roles from the Auth0 Management API, for tenants that will not add a post-login Action:
//! `GET /api/v2/users/{id}` → `app_metadata` through the shared pacing [`crate::auth0::Client`],
//! cached per user for a short time. A login waits for the rate limit a few seconds at most.
//! Any failure stops the login: never an assertion without roles.

use crate::auth0::{client::segment, Client, ClientConfig, Credentials};
use crate::config::ManagementConfig;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type ManagementError = crate::auth0::Auth0Error;

/// The longest a login waits for the Management API rate limit.
const LOGIN_MAX_WAIT: Duration = Duration::from_secs(2);

/// Login-time Management API reads.
pub struct Management {
    cfg: ManagementConfig,
    client: Arc<Client>,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("url", &self.cfg.url)
            .finish()
    }
}

impl Management {
    pub fn new(cfg: ManagementConfig, timeout: Duration) -> Result<Self, ManagementError> {
        let client = Client::new(ClientConfig {
            base_url: cfg.url.clone(),
            audience: format!("{}/api/v2/", cfg.url),
            credentials: Credentials::ClientCredentials {
                client_id: cfg.client_id.clone(),
                client_secret: cfg.client_secret.clone(),
            },
            timeout,
            max_wait: LOGIN_MAX_WAIT.min(timeout),
        })?;
        Ok(Management {
            cfg,
            client: Arc::new(client),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The pacing client (shared with the role prefetch).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Records Management API latency in `m` from now on.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        self.client.set_metrics(m);
    }

    /// The user's `app_metadata` (an empty object when the user has none).
    pub async fn app_metadata(&self, user_id: &str) -> Result<Value, ManagementError> {
        if let Some((at, v)) = self.cache.lock().get(user_id) {
            if at.elapsed() < self.cfg.cache_ttl {
                return Ok(v.clone());
            }
        }
        let path = format!("/api/v2/users/{}", segment(user_id));
        let v: Value = self
            .client
            .get(
                &path,
                &[
                    ("fields", "user_id,app_metadata"),
                    ("include_fields", "true"),
                ],
            )
            .await
            .map_err(|e| match e {
                ManagementError::NotFound { .. } => ManagementError::NoSuchUser(user_id.into()),
                e => e,
            })?;
        let meta = v
            .get("app_metadata")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let mut cache = self.cache.lock();
        if cache.len() > 10_000 {
            let ttl = self.cfg.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        cache.insert(user_id.to_string(), (Instant::now(), meta.clone()));
        Ok(meta)
    }
}
