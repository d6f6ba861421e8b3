//! Roles at shift start without a Management API call per login.
//!
//! Every `prefetch_secs`, one instance reads every user with a Flex role in bulk (users search,
//! or a users-export job beyond 1,000: [`super::users::all_with_roles`]) and shares the result
//! through the store; every instance looks a login's `app_metadata` up there first. Only a user
//! missing from the snapshot (given a role since it was read) costs a per-login lookup.
//!
//! In the store (space `roles`):
//! - `refresh`: the refresh lock (`first_use`, one interval): the instance that sets it reads;
//!   after a failed read it is set again for [`RETRY_AFTER`] so no instance retries sooner;
//! - `snap:{version}`: the snapshot, gzip JSON `{"created_ms", "users": {user_id: app_metadata}}`,
//!   behind an HMAC-SHA256 of the version and the gzip under a key derived from the Management
//!   API client secret (which every instance has): whoever can write to Redis cannot hand out
//!   roles; a snapshot that does not verify is not used;
//! - `version`: the newest snapshot's version, `{created_ms}.{random}`.
//!
//! Both keep three intervals. Each instance reads `version` (a few bytes) every tick and loads a
//! snapshot only when it changed. A snapshot serves logins until it is three intervals old: a
//! Management API outage of two intervals goes unnoticed, and a role changed in Auth0 reaches
//! logins within one interval (three while the API cannot be read).

use super::client::{with_patience, Auth0Error, Client};
use super::users::{all_with_roles, User};
use crate::metrics::Metrics;
use crate::store::{Space, Store, StoreError};
use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one call of the bulk read may wait for the rate limit (logins wait 2 s at most).
const BULK_PATIENCE: Duration = Duration::from_secs(60);
/// After a failed bulk read, no instance tries again for this long (or one interval if shorter).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// A snapshot is used, and kept in the store, for this many intervals.
const KEEP_INTERVALS: u32 = 3;
/// How long snapshot entries stay in the store for a bulk read every `interval`.
pub fn keep(interval: Duration) -> Duration {
    interval * KEEP_INTERVALS
}

/// The largest snapshot read back from the store (gzip JSON; 10,000 agents take ≈ 100 KiB).
const MAX_SNAPSHOT: u64 = 512 * 1024 * 1024;

const VERSION_KEY: &str = "version";
const LOCK_KEY: &str = "refresh";

/// Errors of the bulk read and of sharing it.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error("reading every user with a Flex role failed: {0}")]
    Read(#[from] Auth0Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the roles snapshot {version} in the store cannot be read: {reason}")]
    Corrupt { version: String, reason: String },
    #[error("the roles snapshot {version} in the store is not signed by this deployment's key; it is not used (another deployment with other Management API credentials shares this Redis prefix, or the entry was tampered with: give each deployment its own store.prefix)")]
    Forged { version: String },
}

/// The key that signs snapshots in the store, derived from a secret every instance shares.
#[derive(Clone)]
pub struct SnapshotKey(openssl::pkey::PKey<openssl::pkey::Private>);

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(…)")
    }
}

const MAC_LEN: usize = 32;

impl SnapshotKey {
    /// SHA-256 of a label and `secret`, as an HMAC key.
    pub fn derive(secret: &str) -> Result<Self, openssl::error::ErrorStack> {
        let mut h = openssl::sha::Sha256::new();
        h.update(b"flexgate roles snapshot v1\0");
        h.update(secret.as_bytes());
        Ok(SnapshotKey(openssl::pkey::PKey::hmac(&h.finish())?))
    }

    fn mac(&self, version: &str, body: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.0)?;
        signer.update(&(version.len() as u64).to_be_bytes())?;
        signer.update(version.as_bytes())?;
        signer.update(body)?;
        signer.sign_to_vec()
    }

    /// `mac || body`.
    pub fn seal(&self, version: &str, body: Vec<u8>) -> Vec<u8> {
        let mut out = self.mac(version, &body).unwrap_or_default();
        out.extend(body);
        out
    }

    /// The body, if its MAC verifies.
    pub fn open<'a>(&self, version: &str, sealed: &'a [u8]) -> Result<&'a [u8], PrefetchError> {
        let forged = || PrefetchError::Forged {
            version: version.to_string(),
        };
        if sealed.len() < MAC_LEN {
            return Err(forged());
        }
        let (mac, body) = sealed.split_at(MAC_LEN);
        let want = self.mac(version, body).map_err(|_| forged())?;
        if crate::constant_time::eq(mac, &want) {
            Ok(body)
        } else {
            Err(forged())
        }
    }
}

/// Every user with a Flex role, as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// When it was read (wall clock, so every instance can tell its age).
    pub created_ms: u64,
    users: HashMap<String, Value>,
}

/// The stored form; written from borrowed users, read into owned ones.
#[derive(Serialize, Deserialize)]
struct Wire<U> {
    created_ms: u64,
    users: U,
}

impl Snapshot {
    pub fn new(users: Vec<User>, created_ms: u64, version: String) -> Self {
        let users = users
            .into_iter()
            .map(|u| (u.user_id, u.app_metadata))
            .collect();
        Snapshot {
            version,
            created_ms,
            users,
        }
    }

    /// The user's `app_metadata`, if the user had a Flex role when this was read.
    pub fn get(&self, user_id: &str) -> Option<&Value> {
        self.users.get(user_id)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.created_ms))
    }

    /// gzip JSON, as kept in the store.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            created_ms: self.created_ms,
            users: &self.users,
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing to a Vec cannot fail, and `Wire` always serialises.
        let _ = serde_json::to_writer(&mut gz, &wire);
        let _ = gz.flush();
        gz.finish().unwrap_or_default()
    }

    pub fn decode(version: &str, gz: &[u8]) -> Result<Self, PrefetchError> {
        let corrupt = |reason: String| PrefetchError::Corrupt {
            version: version.to_string(),
            reason,
        };
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .take(MAX_SNAPSHOT)
            .read_to_end(&mut json)
            .map_err(|e| corrupt(format!("not gzip ({e})")))?;
        let wire: Wire<HashMap<String, Value>> =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("not JSON ({e})")))?;
        Ok(Snapshot {
            version: version.to_string(),
            created_ms: wire.created_ms,
            users: wire.users,
        })
    }
}

/// Where the bulk read comes from (the Management API; a fake in unit tests).
#[async_trait]
pub trait RoleSource: Send + Sync {
    async fn users_with_roles(&self) -> Result<Vec<User>, Auth0Error>;
}

#[async_trait]
impl RoleSource for Client {
    async fn users_with_roles(&self) -> Result<Vec<User>, Auth0Error> {
        with_patience(BULK_PATIENCE, all_with_roles(self, &|_, _| {})).await
    }
}

/// The snapshot this instance serves logins from.
#[derive(Debug)]
pub struct Roles {
    interval: Duration,
    current: RwLock<Option<Arc<Snapshot>>>,
}

impl Roles {
    pub fn new(interval: Duration) -> Self {
        Roles {
            interval,
            current: RwLock::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().clone()
    }

    /// The user's `app_metadata` from a snapshot young enough to use; `None` sends the login
    /// to the per-login lookup.
    pub fn lookup(&self, user_id: &str, now_ms: u64) -> Option<Value> {
        let snap = self.current.read().clone()?;
        if snap.age(now_ms) >= self.interval * KEEP_INTERVALS {
            return None;
        }
        snap.get(user_id).cloned()
    }

    /// One line for `/readyz`: what logins are served from.
    pub fn describe(&self, now_ms: u64) -> String {
        match self.current() {
            None => "no snapshot yet: roles are read at each login".into(),
            Some(s) if s.age(now_ms) >= self.interval * KEEP_INTERVALS => format!(
                "the snapshot is {} s old, too old to use: roles are read at each login",
                s.age(now_ms).as_secs()
            ),
            Some(s) => format!(
                "snapshot of {} user(s) with a Flex role, {} s old",
                s.len(),
                s.age(now_ms).as_secs()
            ),
        }
    }

    fn install(&self, snap: Arc<Snapshot>) {
        *self.current.write() = Some(snap);
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one tick did (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// The snapshot in use is young enough.
    Fresh,
    /// Another instance holds the refresh lock (or a failed read's pause).
    Waiting,
    /// This instance read every user and published the snapshot.
    Refreshed { users: usize },
    /// The read or the store failed; the snapshot in use (if any) is kept.
    Failed(String),
}

/// Keeps one instance's [`Roles`] current: loads what others published, reads when due.
pub struct Refresher {
    roles: Arc<Roles>,
    key: SnapshotKey,
    store: Arc<dyn Store>,
    source: Arc<dyn RoleSource>,
    metrics: Option<Arc<Metrics>>,
}

impl Refresher {
    pub fn new(
        roles: Arc<Roles>,
        key: SnapshotKey,
        store: Arc<dyn Store>,
        source: Arc<dyn RoleSource>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Refresher {
            roles,
            key,
            store,
            source,
            metrics,
        }
    }

    fn keep(&self) -> Duration {
        keep(self.roles.interval)
    }

    /// How long until the next tick: every second while this instance has no snapshot (it
    /// starts while another instance reads, and picks that up at once), else a quarter interval
    /// between 1 and 15 s.
    fn next_tick(&self) -> Duration {
        if self.roles.current().is_none() {
            return Duration::from_secs(1);
        }
        (self.roles.interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// Ticks until dropped (the task is aborted with its configuration generation).
    pub async fn run(self) {
        let mut last_failure = String::new();
        loop {
            match self.tick(now_ms()).await {
                Tick::Failed(why) if why != last_failure => {
                    tracing::warn!(error = %why, "the roles snapshot could not be refreshed; logins use the last one while it is under {} s old, else read roles one by one", self.keep().as_secs());
                    last_failure = why;
                }
                Tick::Failed(_) => {}
                _ => last_failure.clear(),
            }
            tokio::time::sleep(self.next_tick()).await;
        }
    }

    /// One round: load a newer published snapshot; when the one in use is due, take the lock
    /// and read.
    pub async fn tick(&self, now_ms: u64) -> Tick {
        let tick = match self.load_published().await {
            Ok(()) => self.refresh_if_due(now_ms).await,
            Err(e @ PrefetchError::Store(_)) => Tick::Failed(e.to_string()),
            // A published snapshot that cannot be used is replaced by the next read.
            Err(e) => match self.refresh_if_due(now_ms).await {
                done @ Tick::Refreshed { .. } => done,
                _ => Tick::Failed(e.to_string()),
            },
        };
        if let Some(m) = &self.metrics {
            let snap = self.roles.current();
            m.roles_snapshot_users
                .set(snap.as_ref().map_or(0, |s| s.len() as i64));
            m.roles_snapshot_age
                .set(snap.map_or(0.0, |s| s.age(now_ms).as_secs_f64()));
        }
        tick
    }

    async fn load_published(&self) -> Result<(), PrefetchError> {
        let Some(version) = self.store.get(Space::Roles, VERSION_KEY).await? else {
            return Ok(());
        };
        let version = String::from_utf8_lossy(&version).into_owned();
        // The version starts with its creation time: one older than this instance's own (read
        // here, not yet shared) is not loaded.
        let published_ms: u64 = version
            .split('.')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        if self
            .roles
            .current()
            .is_some_and(|s| s.version == version || s.created_ms > published_ms)
        {
            return Ok(());
        }
        let Some(sealed) = self.store.get(Space::Roles, &snap_key(&version)).await? else {
            return Ok(()); // expired between the two reads: due, read again
        };
        let key = self.key.clone();
        let snap = tokio::task::spawn_blocking(move || {
            Snapshot::decode(&version, key.open(&version, &sealed)?)
        })
        .await
        .map_err(|e| PrefetchError::Corrupt {
            version: String::new(),
            reason: e.to_string(),
        })??;
        tracing::info!(version = %snap.version, users = snap.len(), "roles snapshot shared by another instance loaded");
        self.roles.install(Arc::new(snap));
        Ok(())
    }

    async fn refresh_if_due(&self, now_ms: u64) -> Tick {
        let due = self
            .roles
            .current()
            .is_none_or(|s| s.age(now_ms) >= self.roles.interval);
        if !due {
            return Tick::Fresh;
        }
        match self
            .store
            .first_use(Space::Roles, LOCK_KEY, self.roles.interval)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Tick::Waiting,
            Err(e) => return Tick::Failed(e.to_string()),
        }
        let result = self.refresh(now_ms).await;
        let label = if result.is_ok() { "ok" } else { "failed" };
        if let Some(m) = &self.metrics {
            m.roles_refreshes.with_label_values(&[label]).inc();
        }
        match result {
            Ok(users) => Tick::Refreshed { users },
            Err(e) => {
                self.pause_after_failure().await;
                Tick::Failed(e.to_string())
            }
        }
    }

    async fn refresh(&self, now_ms: u64) -> Result<usize, PrefetchError> {
        let started = std::time::Instant::now();
        let users = self.source.users_with_roles().await?;
        let version = format!("{now_ms}.{}", hex::encode(rand::random::<[u8; 6]>()));
        let snap = Arc::new(Snapshot::new(users, now_ms, version));
        // Serve from it here at once, even if sharing it fails.
        self.roles.install(snap.clone());
        let n = snap.len();
        let version = snap.version.clone();
        let key = self.key.clone();
        let gz = tokio::task::spawn_blocking(move || key.seal(&snap.version, snap.encode()))
            .await
            .unwrap_or_default();
        let bytes = gz.len();
        self.store
            .put(Space::Roles, &snap_key(&version), gz, self.keep())
            .await?;
        self.store
            .put(
                Space::Roles,
                VERSION_KEY,
                version.clone().into_bytes(),
                self.keep(),
            )
            .await?;
        tracing::info!(users = n, bytes, ms = started.elapsed().as_millis() as u64, %version, "roles snapshot read from the Auth0 Management API and shared");
        Ok(n)
    }

    /// The lock is set again for a short pause, so the next try (by any instance) waits.
    async fn pause_after_failure(&self) {
        let pause = RETRY_AFTER.min(self.roles.interval);
        let _ = self.store.take(Space::Roles, LOCK_KEY).await;
        let _ = self.store.first_use(Space::Roles, LOCK_KEY, pause).await;
    }
}

/// Writes `changed` users (as Auth0 now has them) into the shared snapshot, so every instance
/// serves their new roles at its next tick instead of after the next bulk read. The snapshot
/// keeps its creation time (the bulk-read schedule is unchanged) under a new version.
/// `Ok(None)` when the store holds no snapshot. `keep`: how long the entries stay (3 intervals).
pub async fn amend(
    store: &dyn Store,
    key: &SnapshotKey,
    keep: Duration,
    changed: &[User],
) -> Result<Option<String>, PrefetchError> {
    let Some(version) = store.get(Space::Roles, VERSION_KEY).await? else {
        return Ok(None);
    };
    let version = String::from_utf8_lossy(&version).into_owned();
    let Some(sealed) = store.get(Space::Roles, &snap_key(&version)).await? else {
        return Ok(None);
    };
    let mut snap = Snapshot::decode(&version, key.open(&version, &sealed)?)?;
    for u in changed {
        if u.app_metadata.pointer("/flex/roles").is_some() {
            snap.users.insert(u.user_id.clone(), u.app_metadata.clone());
        } else {
            snap.users.remove(&u.user_id);
        }
    }
    snap.version = format!(
        "{}.{}",
        snap.created_ms,
        hex::encode(rand::random::<[u8; 6]>())
    );
    let sealed = key.seal(&snap.version, snap.encode());
    store
        .put(Space::Roles, &snap_key(&snap.version), sealed, keep)
        .await?;
    store
        .put(
            Space::Roles,
            VERSION_KEY,
            snap.version.clone().into_bytes(),
            keep,
        )
        .await?;
    Ok(Some(snap.version))
}

fn snap_key(version: &str) -> String {
    format!("snap:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
        roles: parking_lot::Mutex<Vec<&'static str>>,
    }

    #[async_trait]
    impl RoleSource for Fake {
        async fn users_with_roles(&self) -> Result<Vec<User>, Auth0Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(Auth0Error::RateLimited {
                    wait: Duration::from_secs(9),
                    max_wait: Duration::from_secs(1),
                });
            }
            let roles = self.roles.lock().clone();
            Ok(vec![User {
                user_id: "auth0|a".into(),
                email: Some("a@example.com".into()),
                app_metadata: json!({"flex": {"roles": roles}, "plan": "x"}),
            }])
        }
    }

    fn fake() -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: Default::default(),
            roles: parking_lot::Mutex::new(vec!["agent"]),
        })
    }

    fn instance(store: &Arc<MemoryStore>, source: &Arc<Fake>) -> (Arc<Roles>, Refresher) {
        let roles = Arc::new(Roles::new(Duration::from_secs(60)));
        let store: Arc<dyn Store> = store.clone();
        let source: Arc<dyn RoleSource> = source.clone();
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        (
            roles.clone(),
            Refresher::new(roles, key, store, source, None),
        )
    }

    #[test]
    fn a_snapshot_survives_the_store_encoding() {
        let s = Snapshot::new(
            vec![User {
                user_id: "auth0|a".into(),
                email: None,
                app_metadata: json!({"flex": {"roles": ["agent"]}}),
            }],
            1_000,
            "1000.ab".into(),
        );
        let back = Snapshot::decode("1000.ab", &s.encode()).unwrap();
        assert_eq!(back, s);
        assert!(matches!(
            Snapshot::decode("v", b"garbage"),
            Err(PrefetchError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn one_instance_reads_and_the_others_load_what_it_shared() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (roles_a, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        let t = 1_000_000;
        assert_eq!(a.tick(t).await, Tick::Refreshed { users: 1 });
        // B finds A's snapshot and makes no read of its own.
        assert_eq!(b.tick(t + 10).await, Tick::Fresh);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        let want = json!({"flex": {"roles": ["agent"]}, "plan": "x"});
        assert_eq!(roles_a.lookup("auth0|a", t + 10), Some(want.clone()));
        assert_eq!(roles_b.lookup("auth0|a", t + 10), Some(want));
        assert_eq!(roles_b.lookup("auth0|other", t + 10), None);
        // Both still fresh a moment later: nothing read.
        assert_eq!(a.tick(t + 30_000).await, Tick::Fresh);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.next_tick(), Duration::from_secs(15));
    }

    #[tokio::test]
    async fn without_a_snapshot_an_instance_looks_every_second() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        source.fail.store(true, Ordering::SeqCst);
        let (_, a) = instance(&store, &source);
        assert!(matches!(a.tick(1_000).await, Tick::Failed(_)));
        assert_eq!(a.next_tick(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_due_snapshot_is_read_again_by_one_instance() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        let t = 1_000_000;
        a.tick(t).await;
        b.tick(t).await;
        // One interval later the lock (kept one interval, measured by the store's clock) is
        // still held, so neither instance reads: the lock, not the clock, decides who reads.
        *source.roles.lock() = vec!["supervisor"];
        assert_eq!(b.tick(t + 61_000).await, Tick::Waiting);
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert_eq!(b.tick(t + 61_000).await, Tick::Refreshed { users: 1 });
        assert_eq!(a.tick(t + 61_001).await, Tick::Fresh);
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            roles_b.lookup("auth0|a", t + 61_001).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
    }

    #[tokio::test]
    async fn an_older_published_snapshot_does_not_replace_a_newer_one() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        a.tick(1_000_000).await;
        let first = store.get(Space::Roles, VERSION_KEY).await.unwrap().unwrap();
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        *source.roles.lock() = vec!["supervisor"];
        assert_eq!(b.tick(1_061_000).await, Tick::Refreshed { users: 1 });
        // The version key goes back to the first snapshot (a slow writer, a restored backup).
        let ttl = Duration::from_secs(60);
        store
            .put(Space::Roles, VERSION_KEY, first, ttl)
            .await
            .unwrap();
        assert_eq!(b.tick(1_062_000).await, Tick::Fresh);
        assert_eq!(
            roles_b.lookup("auth0|a", 1_062_000).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
    }

    #[tokio::test]
    async fn a_failed_read_keeps_the_old_snapshot_until_three_intervals() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (roles, a) = instance(&store, &source);
        let t = 1_000_000;
        a.tick(t).await;
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        source.fail.store(true, Ordering::SeqCst);
        let tick = a.tick(t + 61_000).await;
        assert!(
            matches!(&tick, Tick::Failed(why) if why.contains("rate limit")),
            "{tick:?}"
        );
        // The pause is set: no instance tries again at once.
        assert_eq!(a.tick(t + 62_000).await, Tick::Waiting);
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        assert!(roles.lookup("auth0|a", t + 179_000).is_some());
        assert_eq!(roles.lookup("auth0|a", t + 180_000), None);
    }

    #[test]
    fn a_snapshot_is_used_only_under_this_deployments_key() {
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        let sealed = key.seal("1.a", b"body".to_vec());
        assert_eq!(key.open("1.a", &sealed).unwrap(), b"body");
        // Another version, another secret, a changed byte, a short entry: refused.
        assert!(matches!(
            key.open("2.a", &sealed),
            Err(PrefetchError::Forged { .. })
        ));
        let other = SnapshotKey::derive("other-secret").unwrap();
        assert!(other.open("1.a", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(key.open("1.a", &bad).is_err());
        assert!(key.open("1.a", &sealed[..10]).is_err());
    }

    #[tokio::test]
    async fn a_forged_snapshot_in_the_store_is_not_used() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        a.tick(1_000_000).await;
        // Someone with write access to the store hands out a role.
        let forged = Snapshot::new(
            vec![User {
                user_id: "auth0|mallory".into(),
                email: None,
                app_metadata: json!({"flex": {"roles": ["admin"]}}),
            }],
            1_000_000,
            "9.ff".into(),
        );
        let ttl = Duration::from_secs(60);
        store
            .put(Space::Roles, "snap:9.ff", forged.encode(), ttl)
            .await
            .unwrap();
        store
            .put(Space::Roles, VERSION_KEY, b"9.ff".to_vec(), ttl)
            .await
            .unwrap();
        let (roles_b, b) = instance(&store, &source);
        let tick = b.tick(1_000_010).await;
        assert!(
            matches!(&tick, Tick::Failed(why) if why.contains("not signed")),
            "{tick:?}"
        );
        assert_eq!(roles_b.lookup("auth0|mallory", 1_000_010), None);
        // The next read (here: once the lock is free) replaces it.
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert_eq!(b.tick(1_000_020).await, Tick::Refreshed { users: 1 });
        assert_eq!(roles_b.lookup("auth0|mallory", 1_000_020), None);
        assert!(roles_b.lookup("auth0|a", 1_000_020).is_some());
    }

    #[tokio::test]
    async fn a_role_set_from_the_cli_reaches_every_instance_before_the_next_read() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        a.tick(1_000_000).await;
        b.tick(1_000_001).await;
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        let changed = [
            User {
                user_id: "auth0|a".into(),
                email: None,
                app_metadata: json!({"flex": {"roles": ["supervisor"]}}),
            },
            User {
                user_id: "auth0|new".into(),
                email: None,
                app_metadata: json!({"flex": {"roles": ["agent"]}}),
            },
        ];
        let ttl = Duration::from_secs(180);
        let v = amend(store.as_ref(), &key, ttl, &changed).await.unwrap();
        assert!(
            v.unwrap().starts_with("1000000."),
            "the creation time is kept"
        );
        assert_eq!(b.tick(1_000_002).await, Tick::Fresh);
        assert_eq!(
            roles_b.lookup("auth0|a", 1_000_002).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
        assert!(roles_b.lookup("auth0|new", 1_000_002).is_some());
        assert_eq!(source.calls.load(Ordering::SeqCst), 1, "no bulk read");
        // A user whose Flex roles are gone leaves the snapshot; another key cannot amend.
        let gone = [User {
            user_id: "auth0|new".into(),
            email: None,
            app_metadata: json!({"plan": "x"}),
        }];
        amend(store.as_ref(), &key, ttl, &gone).await.unwrap();
        b.tick(1_000_003).await;
        assert_eq!(roles_b.lookup("auth0|new", 1_000_003), None);
        let other = SnapshotKey::derive("other").unwrap();
        assert!(matches!(
            amend(store.as_ref(), &other, ttl, &gone).await,
            Err(PrefetchError::Forged { .. })
        ));
        let empty = MemoryStore::new(10);
        assert_eq!(amend(&empty, &key, ttl, &gone).await.unwrap(), None);
    }

    #[tokio::test]
    async fn no_snapshot_means_every_login_is_a_miss() {
        let roles = Roles::new(Duration::from_secs(60));
        assert_eq!(roles.lookup("auth0|a", 0), None);
        assert!(roles.current().is_none());
    }
}
