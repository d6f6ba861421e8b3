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
//! - `snap:{version}`: the snapshot, gzip JSON `{"created_ms", "base", "users", "overrides"}`,
//!   behind an HMAC-SHA256 of the version and the gzip under a key derived from the Management
//!   API client secret (which every instance has): whoever can write to Redis cannot hand out
//!   roles; a snapshot that does not verify is not used;
//! - `version`: the newest snapshot's version, `{seq}.{random}`.
//!
//! All keep three intervals. Each instance reads `version` (a few bytes) every tick and loads a
//! snapshot only when it changed. A snapshot serves logins until it is three intervals old: a
//! Management API outage of two intervals goes unnoticed, and a role changed in Auth0 reaches
//! logins within one interval (three while the API cannot be read).
//!
//! ## Publication is monotonic: a change made with `flexgate roles` is never undone
//!
//! Every publication (a bulk read, or [`amend`] from `flexgate roles set/import --config`)
//! replaces `version` by compare-and-set ([`Store::swap`]) from the version it was built on,
//! with the next sequence number. So publications form one chain, each built from the one
//! before; a publication that lost the race is built again from the new head. Then:
//! - concurrent amends cannot lose each other's changes (each one is built on the other);
//! - an amend writes the changed users into `users` (whatever their roles now, none included)
//!   and stamps each in `overrides` with its sequence number and the store's time;
//! - a bulk read notes `base`, the sequence number published when it began, before its first
//!   call. When it publishes, every override with a higher stamp (an amend it may not have
//!   seen) is applied over what it read. An override is dropped only by a read begun after it
//!   and [`INDEX_LAG`] later (Auth0's search index lags writes by seconds);
//! - a bulk read whose head comes from a read begun later (`head.base > base`) is outdated: it
//!   is not published. Along the chain `base` never decreases, so once a read drops an
//!   override, no read begun before that override can publish.
//!
//! By induction along the chain, every snapshot published after an amend of user U (until the
//! next amend of U) gives U what the amend wrote, or what a read begun after the amend (and
//! after the index lag) found in Auth0. An instance never installs a lower sequence number than
//! the one it serves (unless its own is three intervals old: the store lost its data).
//!
//! ## Freshness trusts no instance's clock
//!
//! A snapshot's `created_ms` is the *store's* time ([`Store::time_ms`], Redis `TIME`) when its
//! bulk read began. An instance that loads it notes the store's time then and its own
//! monotonic clock ([`now_ms`]); the age is the store-measured age at receipt plus the time this
//! instance has held it. An instance whose wall clock is an hour off can neither make others
//! serve its snapshot longer nor make them refuse newer ones (order is the sequence number).

use super::client::{with_patience, Auth0Error, Client};
use super::users::{all_with_roles, User};
use crate::metrics::Metrics;
use crate::store::{Space, Store, StoreError};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
/// Auth0's users search (and export) may not show a write for a few seconds: an override
/// stays until a bulk read begun at least this long after it.
pub const INDEX_LAG: Duration = Duration::from_secs(60);
/// A publication is built again at most this many times when others publish in between.
const MAX_TRIES: usize = 8;
/// The longest pause between ticks: a role changed with `--config` reaches every instance
/// within this (plus one store read), well inside the 15 s `flexgate roles` promises.
const MAX_TICK: Duration = Duration::from_secs(5);
/// The refresher task is started again after this pause, doubled per quick stop up to
/// [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);

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
    #[error("the roles snapshot changed {MAX_TRIES} times while this publication was built; try again (`flexgate roles` may be run again safely)")]
    Contended,
    #[error("the bulk read of roles took {secs} s, longer than the three intervals a snapshot is kept; it is not published, as changes made meanwhile may be gone from the store (raise prefetch_secs)")]
    TooSlow { secs: u64 },
    #[error("the roles snapshot {version}, published while this bulk read ran, has expired from the store, so changes made meanwhile cannot be honoured; this read is not published (the next one will be)")]
    Lost { version: String },
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

/// When `flexgate roles` changed a user: the publication's sequence number and the store's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub seq: u64,
    pub at_ms: u64,
}

/// Every user with a Flex role, as read at one moment, with the changes made since.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// The publication's place in the chain (from `version`, which the MAC covers).
    pub seq: u64,
    /// When its bulk read began, by the store's clock (0: no bulk read yet, only amends).
    pub created_ms: u64,
    /// The sequence number published when its bulk read began.
    pub base: u64,
    users: HashMap<String, Value>,
    /// Users changed by [`amend`]: their entry in `users` holds until a later read drops it.
    overrides: HashMap<String, Stamp>,
}

/// The stored form; written from borrowed users, read into owned ones.
#[derive(Serialize, Deserialize)]
struct Wire<U, O> {
    created_ms: u64,
    #[serde(default)]
    base: u64,
    users: U,
    overrides: O,
}

/// `{seq}.{random}` → seq
fn seq_of(version: &str) -> Option<u64> {
    version.split('.').next()?.parse().ok()
}

impl Snapshot {
    pub fn new(users: Vec<User>, created_ms: u64, version: String) -> Self {
        let users = users
            .into_iter()
            .map(|u| (u.user_id, u.app_metadata))
            .collect();
        Snapshot {
            seq: seq_of(&version).unwrap_or(0),
            version,
            created_ms,
            base: 0,
            users,
            overrides: HashMap::new(),
        }
    }

    /// The user's `app_metadata`, if the user had a Flex role when this was read (or was
    /// changed by `flexgate roles` since).
    pub fn get(&self, user_id: &str) -> Option<&Value> {
        self.users.get(user_id)
    }

    /// When `flexgate roles` last changed this user, if an override holds.
    pub fn stamp(&self, user_id: &str) -> Option<Stamp> {
        self.overrides.get(user_id).copied()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// gzip JSON, as kept in the store.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            created_ms: self.created_ms,
            base: self.base,
            users: &self.users,
            overrides: &self.overrides,
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
        let seq = seq_of(version).ok_or_else(|| corrupt("the version has no number".into()))?;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .take(MAX_SNAPSHOT)
            .read_to_end(&mut json)
            .map_err(|e| corrupt(format!("not gzip ({e})")))?;
        let wire: Wire<HashMap<String, Value>, Option<HashMap<String, Stamp>>> =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("not JSON ({e})")))?;
        Ok(Snapshot {
            version: version.to_string(),
            seq,
            created_ms: wire.created_ms,
            base: wire.base,
            users: wire.users,
            overrides: wire.overrides.unwrap_or_default(),
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

/// A snapshot as this instance holds it: the store's time and this instance's clock when it
/// was received, so ages need no other clock.
#[derive(Debug, Clone)]
struct Held {
    snap: Arc<Snapshot>,
    store_ms: u64,
    received_ms: u64,
    /// The store now publishes a lower sequence number than this snapshot's: the store lost its
    /// data (numbers start again) or an old sealed snapshot was put back. A removal published
    /// since then may carry that lower number, so this snapshot could hide it: no login is
    /// answered from it (the per-login read asks Auth0 itself) until a newer one is installed.
    suspect: bool,
}

impl Held {
    /// How long ago the store's clock showed `store_time`.
    fn age_of(&self, store_time: u64, now_ms: u64) -> Duration {
        let then = self.store_ms.saturating_sub(store_time);
        Duration::from_millis(then.saturating_add(now_ms.saturating_sub(self.received_ms)))
    }

    fn age(&self, now_ms: u64) -> Duration {
        self.age_of(self.snap.created_ms, now_ms)
    }
}

/// Why the refresher task stopped, and how often (for `/readyz`).
#[derive(Debug, Default)]
struct Stops {
    count: u64,
    last: String,
}

/// The snapshot this instance serves logins from.
#[derive(Debug)]
pub struct Roles {
    interval: Duration,
    current: RwLock<Option<Held>>,
    stops: Mutex<Stops>,
}

impl Roles {
    pub fn new(interval: Duration) -> Self {
        Roles {
            interval,
            current: RwLock::new(None),
            stops: Mutex::new(Stops::default()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn keep(&self) -> Duration {
        keep(self.interval)
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().as_ref().map(|h| h.snap.clone())
    }

    /// The age of the snapshot in use (`now_ms`: this instance's [`now_ms`]).
    pub fn age(&self, now_ms: u64) -> Option<Duration> {
        self.current.read().as_ref().map(|h| h.age(now_ms))
    }

    /// The user's `app_metadata` from a snapshot young enough to use, or from a change made
    /// with `flexgate roles` younger than that (a removal included); `None` sends the login to
    /// the per-login lookup.
    pub fn lookup(&self, user_id: &str, now_ms: u64) -> Option<Value> {
        let held = self.current.read().clone()?;
        if held.suspect {
            return None;
        }
        let keep = self.keep();
        let changed = held
            .snap
            .stamp(user_id)
            .is_some_and(|s| held.age_of(s.at_ms, now_ms) < keep);
        if !changed && held.age(now_ms) >= keep {
            return None;
        }
        held.snap.get(user_id).cloned().or_else(|| {
            // Changed to "no roles" and dropped by nothing yet: no roles.
            changed.then(|| Value::Object(Default::default()))
        })
    }

    /// One line for `/readyz`: what logins are served from.
    pub fn describe(&self, now_ms: u64) -> String {
        let held = self.current.read().clone();
        let mut line = match held {
            None => "no snapshot yet: roles are read at each login".into(),
            Some(h) if h.suspect => format!(
                "the store publishes an older snapshot than this instance's (sequence {}): roles are read at each login until a newer one is read",
                h.snap.seq
            ),
            Some(h) if h.age(now_ms) >= self.keep() => format!(
                "the snapshot is {} s old, too old to use: roles are read at each login",
                h.age(now_ms).as_secs()
            ),
            Some(h) => format!(
                "snapshot of {} user(s) with a Flex role, {} s old",
                h.snap.len(),
                h.age(now_ms).as_secs()
            ),
        };
        let stops = self.stops.lock();
        if stops.count > 0 {
            line.push_str(&format!(
                "; the refresher task stopped {} time(s) and was started again (last: {})",
                stops.count, stops.last
            ));
        }
        line
    }

    /// How often the refresher task stopped (and was started again).
    pub fn refresher_restarts(&self) -> u64 {
        self.stops.lock().count
    }

    fn install(&self, snap: Arc<Snapshot>, store_ms: u64, received_ms: u64) {
        *self.current.write() = Some(Held {
            snap,
            store_ms,
            received_ms,
            suspect: false,
        });
    }

    /// Whether the snapshot in use was found behind the store's (see [`Held::suspect`]).
    fn is_suspect(&self) -> bool {
        self.current.read().as_ref().is_some_and(|h| h.suspect)
    }

    /// Should the published `seq` replace what this instance holds? Never a lower or equal
    /// one, unless this instance has held its own for three intervals (the store lost its
    /// data and numbers start again).
    /// A lower number marks the held snapshot suspect (not used for logins) meanwhile.
    fn takes(&self, version: &str, seq: u64, now_ms: u64) -> bool {
        let keep = keep_ms(self.keep());
        let mut current = self.current.write();
        match current.as_mut() {
            None => true,
            Some(h) if h.snap.version == version => false,
            Some(h) if seq > h.snap.seq => true,
            Some(h) if now_ms.saturating_sub(h.received_ms) >= keep => true,
            Some(h) => {
                if !h.suspect {
                    tracing::warn!(held = h.snap.seq, published = seq, "the store publishes an older roles snapshot than this instance holds (Redis lost its data, or an old snapshot was put back): roles are read at each login until a newer snapshot is read");
                    h.suspect = true;
                }
                false
            }
        }
    }
}

fn keep_ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// This instance's own clock in milliseconds: monotonic, from the first call. Only ever
/// compared with itself (ages across instances use the store's clock).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // Not 0 at the first call, so "received at 0" never looks special.
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
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
    /// This instance read every user, but a read begun later was published first: the newer
    /// one stays.
    Superseded,
    /// The read or the store failed; the snapshot in use (if any) is kept.
    Failed(String),
}

/// What the store holds now.
struct Head {
    /// The `version` entry as read (what the compare-and-set expects).
    raw: Option<Vec<u8>>,
    seq: u64,
    snap: Option<Snapshot>,
    /// The snapshot is there but cannot be used.
    unreadable: Option<PrefetchError>,
}

async fn open_blocking(
    key: &SnapshotKey,
    version: String,
    sealed: Vec<u8>,
) -> Result<Snapshot, PrefetchError> {
    let key = key.clone();
    let v = version.clone();
    tokio::task::spawn_blocking(move || Snapshot::decode(&v, key.open(&v, &sealed)?))
        .await
        .map_err(|e| PrefetchError::Corrupt {
            version,
            reason: e.to_string(),
        })?
}

async fn read_head(store: &dyn Store, key: &SnapshotKey) -> Result<Head, PrefetchError> {
    let Some(raw) = store.get(Space::Roles, VERSION_KEY).await? else {
        return Ok(Head {
            raw: None,
            seq: 0,
            snap: None,
            unreadable: None,
        });
    };
    let version = String::from_utf8_lossy(&raw).into_owned();
    let seq = seq_of(&version).unwrap_or(0);
    let (snap, unreadable) = match store.get(Space::Roles, &snap_key(&version)).await? {
        None => (None, None),
        Some(sealed) => match open_blocking(key, version, sealed).await {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(Head {
        raw: Some(raw),
        seq,
        snap,
        unreadable,
    })
}

/// What a publication holds, built on the head it replaces.
struct Draft {
    created_ms: u64,
    base: u64,
    users: HashMap<String, Value>,
    overrides: HashMap<String, Stamp>,
}

/// Builds a publication on the head, given its sequence number; `None` declines.
type Builder<'a> = dyn FnMut(&Head, u64) -> Result<Option<Draft>, PrefetchError> + Send + 'a;

/// Publishes what `build` makes of the head (given the new sequence number) by
/// compare-and-set on `version`; when another publication came in between, builds again on
/// it. `Ok(None)`: `build` declined. `floor`: the lowest sequence number to go above.
async fn publish(
    store: &dyn Store,
    key: &SnapshotKey,
    keep: Duration,
    floor: u64,
    build: &mut Builder<'_>,
) -> Result<Option<Arc<Snapshot>>, PrefetchError> {
    for _ in 0..MAX_TRIES {
        let head = read_head(store, key).await?;
        let seq = head.seq.max(floor) + 1;
        let Some(d) = build(&head, seq)? else {
            return Ok(None);
        };
        let version = format!("{seq}.{}", hex::encode(rand::random::<[u8; 6]>()));
        let snap = Arc::new(Snapshot {
            version: version.clone(),
            seq,
            created_ms: d.created_ms,
            base: d.base,
            users: d.users,
            overrides: d.overrides,
        });
        let (key2, s2) = (key.clone(), snap.clone());
        let sealed = tokio::task::spawn_blocking(move || key2.seal(&s2.version, s2.encode()))
            .await
            .map_err(|e| PrefetchError::Corrupt {
                version: version.clone(),
                reason: e.to_string(),
            })?;
        store
            .put(Space::Roles, &snap_key(&version), sealed, keep)
            .await?;
        let expected = head.raw.as_deref();
        let new = version.clone().into_bytes();
        if store
            .swap(Space::Roles, VERSION_KEY, expected, new, keep)
            .await?
        {
            return Ok(Some(snap));
        }
        let _ = store.take(Space::Roles, &snap_key(&version)).await;
    }
    Err(PrefetchError::Contended)
}

/// A bulk read begun at `base` (store time `begun`), built on the head: the overrides the read
/// may not have seen are applied over it. `None` when a read begun later is already published.
fn merge_read(
    read: &HashMap<String, Value>,
    begun: u64,
    base: u64,
    head: &Head,
) -> Result<Option<Draft>, PrefetchError> {
    let mut users = read.clone();
    let mut overrides = HashMap::new();
    match &head.snap {
        Some(cur) if cur.base > base => return Ok(None),
        Some(cur) => {
            let lag = keep_ms(INDEX_LAG);
            for (id, stamp) in &cur.overrides {
                if stamp.seq > base || stamp.at_ms.saturating_add(lag) > begun {
                    match cur.users.get(id) {
                        Some(meta) => users.insert(id.clone(), meta.clone()),
                        None => users.remove(id),
                    };
                    overrides.insert(id.clone(), *stamp);
                }
            }
        }
        // Published since the read began and already gone: what changed cannot be known.
        None if head.seq > base && head.unreadable.is_none() => {
            return Err(PrefetchError::Lost {
                version: String::from_utf8_lossy(head.raw.as_deref().unwrap_or_default())
                    .into_owned(),
            })
        }
        // Nothing, or a snapshot that does not verify (this deployment never wrote it).
        None => {}
    }
    Ok(Some(Draft {
        created_ms: begun,
        base,
        users,
        overrides,
    }))
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
    /// between 1 and [`MAX_TICK`].
    fn next_tick(&self) -> Duration {
        if self.roles.current().is_none() {
            return Duration::from_secs(1);
        }
        (self.roles.interval / 4).clamp(Duration::from_secs(1), MAX_TICK)
    }

    /// Runs [`Self::run`] for ever: when it stops (a panic, or it returned), the stop is
    /// counted (`/readyz`, `flexgate_roles_refresher_restarts_total`), logged, and the task is
    /// started again after a back-off of 1 s doubling to 30 s. Aborting this future aborts
    /// the task it runs.
    pub async fn supervise(self) {
        let me = Arc::new(self);
        let mut pause = RESTART_MIN;
        loop {
            let started = Instant::now();
            let runner = me.clone();
            let task = AbortOnDrop(tokio::spawn(async move { runner.run().await }));
            let why = stop_reason(task.wait().await);
            me.stopped(&why);
            if started.elapsed() > RESTART_MAX * 2 {
                pause = RESTART_MIN;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESTART_MAX);
        }
    }

    fn stopped(&self, why: &str) {
        tracing::error!(reason = %why, "the roles refresher task stopped; starting it again");
        let mut stops = self.roles.stops.lock();
        stops.count += 1;
        stops.last = why.to_string();
        if let Some(m) = &self.metrics {
            m.roles_refresher_restarts.inc();
        }
    }

    /// Ticks until dropped (the task is aborted with its configuration generation).
    pub async fn run(&self) {
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
    /// and read. `now_ms`: this instance's clock ([`now_ms`]).
    pub async fn tick(&self, now_ms: u64) -> Tick {
        let tick = match self.load_published(now_ms).await {
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
            let age = self.roles.age(now_ms).unwrap_or_default();
            m.roles_snapshot_age.set(age.as_secs_f64());
        }
        tick
    }

    async fn load_published(&self, now_ms: u64) -> Result<(), PrefetchError> {
        let Some(version) = self.store.get(Space::Roles, VERSION_KEY).await? else {
            return Ok(());
        };
        let version = String::from_utf8_lossy(&version).into_owned();
        let seq = seq_of(&version).unwrap_or(0);
        if !self.roles.takes(&version, seq, now_ms) {
            return Ok(());
        }
        let Some(sealed) = self.store.get(Space::Roles, &snap_key(&version)).await? else {
            return Ok(()); // expired between the two reads: due, read again
        };
        let snap = open_blocking(&self.key, version, sealed).await?;
        let store_ms = self.store.time_ms().await?;
        tracing::info!(version = %snap.version, users = snap.len(), "roles snapshot shared by another instance loaded");
        self.roles.install(Arc::new(snap), store_ms, now_ms);
        Ok(())
    }

    async fn refresh_if_due(&self, now_ms: u64) -> Tick {
        let due = self.roles.is_suspect()
            || self
                .roles
                .age(now_ms)
                .is_none_or(|age| age >= self.roles.interval);
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
            Ok(Some(users)) => Tick::Refreshed { users },
            Ok(None) => Tick::Superseded,
            Err(e) => {
                self.pause_after_failure().await;
                Tick::Failed(e.to_string())
            }
        }
    }

    /// Reads every user and publishes them on top of whatever was published meanwhile.
    async fn refresh(&self, now_ms: u64) -> Result<Option<usize>, PrefetchError> {
        let started = Instant::now();
        // Before the first call: the store's time and the sequence number the read starts from.
        let begun = self.store.time_ms().await?;
        let base = self
            .store
            .get(Space::Roles, VERSION_KEY)
            .await?
            .and_then(|v| seq_of(&String::from_utf8_lossy(&v)))
            .unwrap_or(0);
        let read: HashMap<String, Value> = self
            .read_while_loading()
            .await?
            .into_iter()
            .map(|u| (u.user_id, u.app_metadata))
            .collect();
        let took = self.store.time_ms().await?.saturating_sub(begun);
        if took >= keep_ms(self.keep()) {
            return Err(PrefetchError::TooSlow { secs: took / 1000 });
        }
        let floor = self.roles.current().map_or(0, |s| s.seq);
        let mut build = |head: &Head, _seq: u64| merge_read(&read, begun, base, head);
        let published = publish(
            self.store.as_ref(),
            &self.key,
            self.keep(),
            floor,
            &mut build,
        )
        .await?;
        let Some(snap) = published else {
            tracing::info!("roles read from the Auth0 Management API, but a read begun later was published first; it stays");
            return Ok(None);
        };
        let n = snap.len();
        let version = snap.version.clone();
        // Its age counts from the read's start, by the store's clock, from this tick on.
        self.roles.install(snap, begun, now_ms);
        tracing::info!(users = n, ms = started.elapsed().as_millis() as u64, %version, "roles snapshot read from the Auth0 Management API and shared");
        Ok(Some(n))
    }

    /// The bulk read; meanwhile this instance goes on loading what others publish every tick
    /// (a change made with `roles … --config` reaches it within a tick, however long the read).
    async fn read_while_loading(&self) -> Result<Vec<User>, Auth0Error> {
        let read = self.source.users_with_roles();
        tokio::pin!(read);
        loop {
            tokio::select! {
                users = &mut read => return users,
                _ = tokio::time::sleep(self.next_tick()) => {
                    if let Err(e) = self.load_published(now_ms()).await {
                        tracing::debug!(error = %e, "loading a published roles snapshot during the bulk read failed");
                    }
                }
            }
        }
    }

    /// The lock is set again for a short pause, so the next try (by any instance) waits.
    async fn pause_after_failure(&self) {
        let pause = RETRY_AFTER.min(self.roles.interval);
        let _ = self.store.take(Space::Roles, LOCK_KEY).await;
        let _ = self.store.first_use(Space::Roles, LOCK_KEY, pause).await;
    }
}

/// A task aborted when this is dropped (the supervisor's own abort reaches the refresher).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn wait(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stop_reason(ended: Result<(), tokio::task::JoinError>) -> String {
    match ended {
        Ok(()) => "it returned".into(),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("it panicked: {msg}")
        }
        Err(e) => e.to_string(),
    }
}

/// Writes `changed` users (as Auth0 now has them, roles or none) into the shared snapshot and
/// stamps them, so every instance serves their new roles at its next tick instead of after the
/// next bulk read, and no bulk read begun before this undoes them (see the module doc). When
/// the store holds no snapshot, one holding only these users is published (a bulk read in
/// flight then honours them). The bulk-read schedule is unchanged. `keep`: how long the entries
/// stay (3 intervals). Returns the new version.
pub async fn amend(
    store: &dyn Store,
    key: &SnapshotKey,
    keep: Duration,
    changed: &[User],
) -> Result<String, PrefetchError> {
    let at_ms = store.time_ms().await?;
    let mut build = |head: &Head, seq: u64| {
        if let Some(e) = &head.unreadable {
            return Err(match e {
                PrefetchError::Forged { version } => PrefetchError::Forged {
                    version: version.clone(),
                },
                e => PrefetchError::Corrupt {
                    version: String::new(),
                    reason: e.to_string(),
                },
            });
        }
        let mut d = match &head.snap {
            Some(s) => Draft {
                created_ms: s.created_ms,
                base: s.base,
                users: s.users.clone(),
                overrides: s.overrides.clone(),
            },
            None => Draft {
                created_ms: 0,
                base: 0,
                users: HashMap::new(),
                overrides: HashMap::new(),
            },
        };
        for u in changed {
            d.users.insert(u.user_id.clone(), u.app_metadata.clone());
            d.overrides.insert(u.user_id.clone(), Stamp { seq, at_ms });
        }
        Ok(Some(d))
    };
    let snap = publish(store, key, keep, 0, &mut build).await?;
    Ok(snap.map(|s| s.version.clone()).unwrap_or_default())
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
        panic_once: std::sync::atomic::AtomicBool,
        roles: parking_lot::Mutex<Vec<&'static str>>,
        /// Amended into this store after the read is taken and before it returns: a change
        /// made while the bulk read is in flight.
        during: parking_lot::Mutex<Option<(Arc<MemoryStore>, Vec<User>)>>,
    }

    #[async_trait]
    impl RoleSource for Fake {
        async fn users_with_roles(&self) -> Result<Vec<User>, Auth0Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.panic_once.swap(false, Ordering::SeqCst) {
                panic!("a bug in the bulk read");
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(Auth0Error::RateLimited {
                    wait: Duration::from_secs(9),
                    max_wait: Duration::from_secs(1),
                });
            }
            let roles = self.roles.lock().clone();
            let read = vec![User {
                user_id: "auth0|a".into(),
                email: Some("a@example.com".into()),
                app_metadata: json!({"flex": {"roles": roles}, "plan": "x"}),
            }];
            let during = self.during.lock().take();
            if let Some((store, changed)) = during {
                let key = SnapshotKey::derive("mgmt-secret").unwrap();
                amend(store.as_ref(), &key, Duration::from_secs(180), &changed)
                    .await
                    .unwrap();
            }
            Ok(read)
        }
    }

    fn fake() -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: Default::default(),
            panic_once: Default::default(),
            roles: parking_lot::Mutex::new(vec!["agent"]),
            during: Default::default(),
        })
    }

    fn no_roles(id: &str) -> User {
        User {
            user_id: id.into(),
            email: None,
            app_metadata: json!({"plan": "x"}),
        }
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
        assert_eq!(a.next_tick(), Duration::from_secs(5));
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
        b.tick(1_000_000).await;
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
        // Not installed, and the newer one is not trusted either (it could hide a removal
        // published under the lower number): logins read roles one by one, and the instance
        // reads anew once the lock lets it.
        assert_eq!(b.tick(1_062_000).await, Tick::Waiting);
        assert_eq!(roles_b.lookup("auth0|a", 1_062_000), None);
        assert!(roles_b.describe(1_062_000).contains("older snapshot"));
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert_eq!(b.tick(1_063_000).await, Tick::Refreshed { users: 1 });
        assert_eq!(
            roles_b.lookup("auth0|a", 1_063_000).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
    }

    #[tokio::test]
    async fn a_removal_after_the_store_lost_its_data_is_not_hidden_by_the_old_snapshot() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        let t = 1_000_000;
        a.tick(t).await;
        b.tick(t).await;
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        a.tick(t + 61_000).await; // a second publication: B will hold sequence 2
        b.tick(t + 61_000).await;
        assert!(roles_b.lookup("auth0|a", t + 61_000).is_some());
        // Redis loses everything; then `flexgate roles set a --none --config` publishes
        // sequence 1 holding only that change.
        for k in [VERSION_KEY, LOCK_KEY] {
            store.take(Space::Roles, k).await.unwrap();
        }
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        amend(
            store.as_ref(),
            &key,
            keep(Duration::from_secs(60)),
            &[no_roles("auth0|a")],
        )
        .await
        .unwrap();
        // Another instance holds the read lock. B does not answer from its old snapshot
        // (which still gives roles): the login asks Auth0 (`None`).
        assert!(store
            .first_use(Space::Roles, LOCK_KEY, Duration::from_secs(60))
            .await
            .unwrap());
        assert_eq!(b.tick(t + 62_000).await, Tick::Waiting);
        assert_eq!(roles_b.lookup("auth0|a", t + 62_000), None);
        // Once B may read, it reads at once (suspect makes it due) and honours the removal.
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert!(matches!(b.tick(t + 63_000).await, Tick::Refreshed { .. }));
        assert_ne!(
            roles_b
                .lookup("auth0|a", t + 63_000)
                .map(|m| m["flex"]["roles"].clone()),
            Some(json!(["agent"]))
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
        let created = roles_b.current().unwrap().created_ms;
        let v = amend(store.as_ref(), &key, ttl, &changed).await.unwrap();
        assert!(v.starts_with("2."), "the next in the chain: {v}");
        assert_eq!(b.tick(1_000_002).await, Tick::Fresh);
        assert_eq!(
            roles_b.lookup("auth0|a", 1_000_002).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
        assert!(roles_b.lookup("auth0|new", 1_000_002).is_some());
        assert_eq!(source.calls.load(Ordering::SeqCst), 1, "no bulk read");
        assert_eq!(
            roles_b.current().unwrap().created_ms,
            created,
            "the read time is kept"
        );
        // A user whose Flex roles are gone is served as having none; another key cannot amend.
        let gone = [no_roles("auth0|new")];
        amend(store.as_ref(), &key, ttl, &gone).await.unwrap();
        b.tick(1_000_003).await;
        let served = roles_b.lookup("auth0|new", 1_000_003).unwrap();
        assert_eq!(served.pointer("/flex/roles"), None, "{served}");
        let other = SnapshotKey::derive("other").unwrap();
        assert!(matches!(
            amend(store.as_ref(), &other, ttl, &gone).await,
            Err(PrefetchError::Forged { .. })
        ));
    }

    #[tokio::test]
    async fn a_bulk_read_begun_before_a_removal_does_not_undo_it() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (roles_a, a) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        let t = 1_000_000;
        a.tick(t).await;
        b.tick(t + 1).await;
        // The next read takes Auth0's state (A has a role); while it runs, `flexgate roles set
        // --none --config` removes the role and amends the snapshot.
        *source.during.lock() = Some((store.clone(), vec![no_roles("auth0|a")]));
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert_eq!(a.tick(t + 61_000).await, Tick::Refreshed { users: 1 });
        assert_eq!(b.tick(t + 61_001).await, Tick::Fresh);
        for (roles, at) in [(&roles_a, t + 61_000), (&roles_b, t + 61_001)] {
            let served = roles
                .lookup("auth0|a", at)
                .expect("answered by the snapshot");
            assert_eq!(served.pointer("/flex/roles"), None, "{served}");
        }
        // The next read, begun after the change, carries it on until INDEX_LAG has passed.
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        assert_eq!(a.tick(t + 122_000).await, Tick::Refreshed { users: 1 });
        let snap = roles_a.current().unwrap();
        assert!(snap.stamp("auth0|a").is_some(), "kept within the index lag");
        assert_eq!(snap.get("auth0|a").unwrap().pointer("/flex/roles"), None);
    }

    #[tokio::test]
    async fn a_removal_while_the_first_bulk_read_runs_is_honoured() {
        // No snapshot yet: the amend publishes one holding only the change.
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        *source.during.lock() = Some((store.clone(), vec![no_roles("auth0|a")]));
        let (roles_a, a) = instance(&store, &source);
        assert_eq!(a.tick(1_000).await, Tick::Refreshed { users: 1 });
        let served = roles_a.lookup("auth0|a", 1_001).unwrap();
        assert_eq!(served.pointer("/flex/roles"), None, "{served}");
    }

    #[tokio::test]
    async fn concurrent_amends_keep_each_others_changes() {
        let store = Arc::new(MemoryStore::new(1000));
        let source = fake();
        let (_, a) = instance(&store, &source);
        a.tick(1_000_000).await;
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        let ttl = Duration::from_secs(180);
        let user = |i: usize| User {
            user_id: format!("auth0|u{i}"),
            email: None,
            app_metadata: json!({"flex": {"roles": ["agent"]}}),
        };
        let amends: Vec<_> = (0..6)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { amend(store.as_ref(), &key, ttl, &[user(i)]).await })
            })
            .collect();
        for t in amends {
            t.await.unwrap().unwrap();
        }
        let (roles_b, b) = instance(&store, &source);
        b.tick(1_000_001).await;
        for i in 0..6 {
            assert!(
                roles_b.lookup(&format!("auth0|u{i}"), 1_000_001).is_some(),
                "u{i}"
            );
        }
        assert_eq!(roles_b.current().unwrap().seq, 7);
    }

    #[tokio::test]
    async fn a_read_begun_before_a_newer_published_read_is_not_published() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, a) = instance(&store, &source);
        a.tick(1_000_000).await;
        let key = SnapshotKey::derive("mgmt-secret").unwrap();
        let head = read_head(store.as_ref(), &key).await.unwrap();
        let read: HashMap<String, Value> = HashMap::new();
        // The head's read began at sequence 0; a read begun at 0 may publish, one begun
        // "before" a read with a higher base may not.
        assert!(merge_read(&read, 0, 0, &head).unwrap().is_some());
        let mut newer = head.snap.clone().unwrap();
        newer.base = 5;
        let newer_head = Head {
            snap: Some(newer),
            ..head
        };
        assert!(merge_read(&read, 0, 4, &newer_head).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_publisher_clock_an_hour_ahead_changes_nothing_for_the_others() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        let (_, ahead) = instance(&store, &source);
        let (roles_b, b) = instance(&store, &source);
        let hour = 3_600_000;
        let t = 5_000_000;
        // The publisher's clock reads an hour later than B's.
        assert_eq!(ahead.tick(t + hour).await, Tick::Refreshed { users: 1 });
        assert_eq!(b.tick(t).await, Tick::Fresh);
        assert!(roles_b.lookup("auth0|a", t + 179_000).is_some());
        assert_eq!(
            roles_b.lookup("auth0|a", t + 180_000),
            None,
            "not served past three intervals of B's own clock"
        );
        // A newer snapshot, from C whose clock reads far behind, is taken, not refused.
        let (roles_c, c) = instance(&store, &source);
        assert_eq!(c.tick(9).await, Tick::Fresh);
        store.take(Space::Roles, LOCK_KEY).await.unwrap();
        *source.roles.lock() = vec!["supervisor"];
        assert_eq!(c.tick(61_009).await, Tick::Refreshed { users: 1 });
        assert_eq!(b.tick(t + 1_000).await, Tick::Fresh);
        assert_eq!(
            roles_b.lookup("auth0|a", t + 1_000).unwrap()["flex"]["roles"],
            json!(["supervisor"])
        );
        assert_eq!(roles_c.current(), roles_b.current());
    }

    #[tokio::test]
    async fn a_refresher_that_panics_is_started_again_and_says_so() {
        let store = Arc::new(MemoryStore::new(100));
        let source = fake();
        source.panic_once.store(true, Ordering::SeqCst);
        let roles = Arc::new(Roles::new(Duration::from_secs(2)));
        let metrics = Arc::new(Metrics::new().unwrap());
        let r = Refresher::new(
            roles.clone(),
            SnapshotKey::derive("mgmt-secret").unwrap(),
            store.clone(),
            source.clone(),
            Some(metrics.clone()),
        );
        let task = tokio::spawn(r.supervise());
        let deadline = Instant::now() + Duration::from_secs(20);
        while roles.lookup("auth0|a", now_ms()).is_none() {
            assert!(Instant::now() < deadline, "{}", roles.describe(now_ms()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
        assert_eq!(roles.refresher_restarts(), 1);
        assert_eq!(metrics.roles_refresher_restarts.get(), 1);
        let line = roles.describe(now_ms());
        assert!(
            line.contains("stopped 1 time(s) and was started again"),
            "{line}"
        );
        assert!(line.contains("a bug in the bulk read"), "{line}");
        assert!(source.calls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn no_snapshot_means_every_login_is_a_miss() {
        let roles = Roles::new(Duration::from_secs(60));
        assert_eq!(roles.lookup("auth0|a", 0), None);
        assert!(roles.current().is_none());
    }
}
