//! Roles from the Auth0 Management API, for tenants that will not add a post-login Action.
//! A login's `app_metadata` comes from, in order:
//! 1. the shared roles snapshot ([`crate::auth0::prefetch`], `prefetch_secs`), no API call;
//! 2. a short per-user cache;
//! 3. `GET /api/v2/users/{id}` through the shared pacing [`crate::auth0::Client`]; a login waits
//!    for the rate limit a few seconds at most.
//!
//! Any failure stops the login: never an assertion without roles.

use crate::auth0::prefetch::{self, Refresher, Roles, SnapshotKey};
use crate::auth0::{client::segment, Client, ClientConfig, Credentials};
use crate::config::ManagementConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub type ManagementError = crate::auth0::Auth0Error;

/// The longest a login waits for the Management API rate limit.
const LOGIN_MAX_WAIT: Duration = Duration::from_secs(2);

/// Login-time Management API reads.
pub struct Management {
    cfg: ManagementConfig,
    client: Arc<Client>,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
    /// The shared snapshot, when `prefetch_secs` is on.
    roles: Option<Arc<Roles>>,
    /// The task keeping `roles` current (supervised: started again if it stops); stopped with
    /// this configuration generation.
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
    metrics: OnceLock<Arc<Metrics>>,
}

impl Drop for Management {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.lock().take() {
            task.abort();
        }
    }
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
            roles: cfg.prefetch.map(|every| Arc::new(Roles::new(every))),
            cfg,
            client: Arc::new(client),
            cache: Mutex::new(HashMap::new()),
            refresher: Mutex::new(None),
            metrics: OnceLock::new(),
        })
    }

    /// Starts keeping the roles snapshot current through `store` (nothing when `prefetch_secs`
    /// is 0). Call once, inside the runtime.
    pub fn start_prefetch(&self, store: Arc<dyn Store>) -> Result<(), ManagementError> {
        let Some(roles) = &self.roles else {
            return Ok(());
        };
        let key = SnapshotKey::derive(self.cfg.client_secret.expose()).map_err(|e| {
            ManagementError::Unreachable {
                url: self.cfg.url.clone(),
                reason: format!("deriving the roles snapshot key failed: {e}"),
            }
        })?;
        let refresher = Refresher::new(
            roles.clone(),
            key,
            store,
            self.client.clone(),
            self.metrics.get().cloned(),
        );
        let task = tokio::spawn(refresher.supervise());
        if let Some(old) = self.refresher.lock().replace(task.abort_handle()) {
            old.abort();
        }
        Ok(())
    }

    /// The snapshot logins are served from, if `prefetch_secs` is on.
    pub fn roles(&self) -> Option<&Arc<Roles>> {
        self.roles.as_ref()
    }

    fn count(&self, source: &str) {
        if let Some(m) = self.metrics.get() {
            m.roles_reads.with_label_values(&[source]).inc();
        }
    }

    /// The pacing client (shared with the role prefetch).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Records Management API latency in `m` from now on.
    pub fn set_metrics(&self, m: Arc<Metrics>) {
        self.client.set_metrics(m.clone());
        let _ = self.metrics.set(m);
    }

    /// The user's `app_metadata` (an empty object when the user has none).
    pub async fn app_metadata(&self, user_id: &str) -> Result<Value, ManagementError> {
        self.app_metadata_from(user_id).await.map(|(v, _)| v)
    }

    /// The user's `app_metadata` and where it came from: `snapshot` (the shared roles
    /// snapshot), `cache` (this process's cache) or `api` (a call to the Management API).
    pub async fn app_metadata_from(
        &self,
        user_id: &str,
    ) -> Result<(Value, &'static str), ManagementError> {
        if let Some(meta) = self
            .roles
            .as_ref()
            .and_then(|r| r.lookup(user_id, prefetch::now_ms()))
        {
            self.count("snapshot");
            return Ok((meta, "snapshot"));
        }
        if let Some((at, v)) = self.cache.lock().get(user_id) {
            if at.elapsed() < self.cfg.cache_ttl {
                self.count("cache");
                return Ok((v.clone(), "cache"));
            }
        }
        self.count("api");
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
        Ok((meta, "api"))
    }
}
