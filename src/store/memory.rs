//! The in-memory store: one process, bounded, expired entries pruned as it goes.

use super::{Space, Store, StoreError};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Inner {
    entries: HashMap<(Space, String), (Instant, Vec<u8>)>,
    next_prune: Instant,
}

/// A bounded map with per-entry expiry.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_entries: usize,
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                next_prune: Instant::now(),
            }),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if now >= inner.next_prune || inner.entries.len() >= self.max_entries {
            inner.entries.retain(|_, (exp, _)| *exp > now);
            inner.next_prune = now + Duration::from_secs(10);
        }
        let k = (space, key.to_string());
        if only_if_absent {
            if let Some((exp, _)) = inner.entries.get(&k) {
                if *exp > now {
                    return Ok(false);
                }
            }
        }
        if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&k) {
            return Err(StoreError::Full(self.max_entries));
        }
        inner.entries.insert(k, (now + ttl, value));
        Ok(true)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.insert(space, key, value, ttl, false).map(|_| ())
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.inner.lock();
        match inner.entries.get(&(space, key.to_string())) {
            Some((exp, v)) if *exp > Instant::now() => Ok(Some(v.clone())),
            _ => Ok(None),
        }
    }

    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut inner = self.inner.lock();
        match inner.entries.remove(&(space, key.to_string())) {
            Some((exp, v)) if exp > Instant::now() => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    async fn first_use(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.insert(space, key, Vec::new(), ttl, true)
    }

    async fn swap(
        &self,
        space: Space,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let held = inner
            .entries
            .get(&(space, key.to_string()))
            .filter(|(exp, _)| *exp > now)
            .map(|(_, v)| v.as_slice());
        if held != expected {
            return Ok(false);
        }
        if held.is_none() && inner.entries.len() >= self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        inner
            .entries
            .insert((space, key.to_string()), (now + ttl, new));
        Ok(true)
    }

    async fn time_ms(&self) -> Result<u64, StoreError> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn push_list(
        &self,
        space: Space,
        key: &str,
        item: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        // Read, change and write under one hold of the lock: atomic, as in Redis.
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let k = (space, key.to_string());
        let mut items: Vec<String> = match inner.entries.get(&k) {
            Some((exp, v)) if *exp > now => serde_json::from_slice(v).unwrap_or_default(),
            _ => Vec::new(),
        };
        items.insert(0, item.to_string());
        let dropped = items.split_off(max.min(items.len()));
        let bytes = serde_json::to_vec(&items).unwrap_or_default();
        if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&k) {
            inner.entries.retain(|_, (exp, _)| *exp > now);
            if inner.entries.len() >= self.max_entries {
                return Err(StoreError::Full(self.max_entries));
            }
        }
        inner.entries.insert(k, (now + ttl, bytes));
        Ok(dropped)
    }

    async fn list(&self, space: Space, key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .get(space, key)
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_is_single_use_and_expires() {
        let s = MemoryStore::new(10);
        s.put(Space::Pending, "a", b"1".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            s.take(Space::Pending, "a").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(s.take(Space::Pending, "a").await.unwrap(), None);
        s.put(Space::Roles, "v", b"3".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s.get(Space::Roles, "v").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get(Space::Roles, "v").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get(Space::Pending, "v").await.unwrap(), None);
        s.put(Space::Pending, "b", b"2".to_vec(), Duration::from_millis(0))
            .await
            .unwrap();
        assert_eq!(s.take(Space::Pending, "b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn swap_sets_only_over_what_was_expected() {
        let s = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        assert!(s
            .swap(Space::Roles, "v", None, b"1".to_vec(), ttl)
            .await
            .unwrap());
        assert!(!s
            .swap(Space::Roles, "v", None, b"2".to_vec(), ttl)
            .await
            .unwrap());
        assert!(!s
            .swap(Space::Roles, "v", Some(b"0"), b"2".to_vec(), ttl)
            .await
            .unwrap());
        assert!(s
            .swap(Space::Roles, "v", Some(b"1"), b"2".to_vec(), ttl)
            .await
            .unwrap());
        assert_eq!(s.get(Space::Roles, "v").await.unwrap(), Some(b"2".to_vec()));
        assert!(s.time_ms().await.unwrap() > 1_700_000_000_000);
    }

    #[tokio::test]
    async fn lists_keep_the_newest_and_give_back_what_fell_off() {
        let s = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        for i in 0..3 {
            let dropped = s
                .push_list(Space::Trace, "l", &i.to_string(), 2, ttl)
                .await
                .unwrap();
            assert_eq!(
                dropped,
                if i == 2 {
                    vec!["0".to_string()]
                } else {
                    vec![]
                }
            );
        }
        assert_eq!(s.list(Space::Trace, "l").await.unwrap(), ["2", "1"]);
        assert!(s.list(Space::Trace, "none").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn first_use_and_bound() {
        let s = MemoryStore::new(2);
        assert!(s
            .first_use(Space::RequestId, "x", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(!s
            .first_use(Space::RequestId, "x", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(s
            .first_use(Space::Pending, "x", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(matches!(
            s.first_use(Space::RequestId, "y", Duration::from_secs(60))
                .await,
            Err(StoreError::Full(2))
        ));
    }
}
