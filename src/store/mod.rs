//! Shared state behind one small interface. Entries are opaque bytes with a TTL, so a backend
//! needs only a few operations: put, get, take, first use, compare-and-set and the store's
//! clock. `memory` is the default (one instance).

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store is full ({0} entries); logins are refused until entries expire")]
    Full(usize),
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// Key spaces, so one backend can hold every kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Pending logins, keyed by OIDC `state`.
    Pending,
    /// AuthnRequest IDs already answered (single use), keyed by `issuer|ID`.
    RequestId,
    /// The shared snapshot of Flex roles read from the Auth0 Management API.
    Roles,
    /// Login traces and their indexes (`trace::keep`).
    Trace,
}

impl Space {
    pub fn prefix(self) -> &'static str {
        match self {
            Space::Pending => "pending",
            Space::RequestId => "reqid",
            Space::Roles => "roles",
            Space::Trace => "trace",
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores `value` under `key` for at most `ttl`.
    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Returns the entry and leaves it in place.
    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes and returns the entry: each entry can be taken once.
    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Marks `key` used; `false` when it already was (within `ttl`).
    async fn first_use(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Sets `key` to `new` only if it holds `expected` now (`None`: only if it is absent), in
    /// one atomic step; `false` when it held something else. Publications that must not undo
    /// each other go through this.
    async fn swap(
        &self,
        space: Space,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// The store's clock, in milliseconds since the Unix epoch: one clock that every instance
    /// sharing the store reads alike (no instance's own clock has to be right).
    async fn time_ms(&self) -> Result<u64, StoreError>;
    /// Is the store usable? (for `/readyz`)
    async fn ping(&self) -> Result<(), StoreError>;
    /// Puts `item` first in the list under `key`, keeps the first `max` items, and sets the
    /// list's TTL, in one atomic step; returns the items that fell off the end.
    async fn push_list(
        &self,
        space: Space,
        key: &str,
        item: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError>;
    /// The list under `key`, newest first (empty when there is none).
    async fn list(&self, space: Space, key: &str) -> Result<Vec<String>, StoreError>;
}
