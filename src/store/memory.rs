//! The in-memory store: one process, bounded, expired entries pruned as it goes.

use super::{Space, Store, StoreError};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A stored value. A list written by `push_list` is kept as a list, so that a push is O(1) and
/// does not parse and re-encode the whole list (the login traces' `recent` list is pushed once
/// per login and holds up to `trace.max_traces` references); it reads back as the JSON array
/// of strings it stood for before (`serde_json::to_vec` of the items, newest first).
#[derive(Debug)]
enum Val {
    Bytes(Vec<u8>),
    List(VecDeque<String>),
}

impl Val {
    fn bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Val::Bytes(b) => Cow::Borrowed(b),
            Val::List(items) => Cow::Owned(serde_json::to_vec(items).unwrap_or_default()),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b,
            list => list.bytes().into_owned(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<(Space, String), (Instant, Val)>,
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
        inner.entries.insert(k, (now + ttl, Val::Bytes(value)));
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
            Some((exp, v)) if *exp > Instant::now() => Ok(Some(v.bytes().into_owned())),
            _ => Ok(None),
        }
    }

    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut inner = self.inner.lock();
        match inner.entries.remove(&(space, key.to_string())) {
            Some((exp, v)) if exp > Instant::now() => Ok(Some(v.into_bytes())),
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
            .map(|(_, v)| v.bytes());
        if held.as_deref() != expected {
            return Ok(false);
        }
        if held.is_none() && inner.entries.len() >= self.max_entries {
            return Err(StoreError::Full(self.max_entries));
        }
        inner
            .entries
            .insert((space, key.to_string()), (now + ttl, Val::Bytes(new)));
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
        if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&k) {
            inner.entries.retain(|_, (exp, _)| *exp > now);
            if inner.entries.len() >= self.max_entries {
                return Err(StoreError::Full(self.max_entries));
            }
        }
        let mut items = match inner.entries.remove(&k) {
            Some((exp, Val::List(items))) if exp > now => items,
            Some((exp, Val::Bytes(v))) if exp > now => {
                serde_json::from_slice::<VecDeque<String>>(&v).unwrap_or_default()
            }
            _ => VecDeque::new(),
        };
        items.push_front(item.to_string());
        let dropped = items.split_off(max.min(items.len())).into();
        inner.entries.insert(k, (now + ttl, Val::List(items)));
        Ok(dropped)
    }

    async fn list(&self, space: Space, key: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.inner.lock();
        Ok(match inner.entries.get(&(space, key.to_string())) {
            Some((exp, Val::List(items))) if *exp > Instant::now() => {
                items.iter().cloned().collect()
            }
            Some((exp, Val::Bytes(v))) if *exp > Instant::now() => {
                serde_json::from_slice(v).unwrap_or_default()
            }
            _ => Vec::new(),
        })
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
    async fn a_pushed_list_reads_back_as_the_json_array_it_stands_for() {
        let s = MemoryStore::new(10);
        let ttl = Duration::from_secs(60);
        for item in ["a", "b\"q", "c"] {
            s.push_list(Space::Trace, "l", item, 5, ttl).await.unwrap();
        }
        let want = serde_json::to_vec(&["c", "b\"q", "a"]).unwrap();
        assert_eq!(s.get(Space::Trace, "l").await.unwrap(), Some(want.clone()));
        // swap compares against those bytes
        assert!(!s
            .swap(Space::Trace, "l", Some(b"[]"), b"[]".to_vec(), ttl)
            .await
            .unwrap());
        // a list written by put is pushed onto as before
        s.put(Space::Trace, "p", br#"["x","y"]"#.to_vec(), ttl)
            .await
            .unwrap();
        let dropped = s.push_list(Space::Trace, "p", "w", 2, ttl).await.unwrap();
        assert_eq!(dropped, ["y"]);
        assert_eq!(s.list(Space::Trace, "p").await.unwrap(), ["w", "x"]);
        assert_eq!(s.take(Space::Trace, "l").await.unwrap(), Some(want));
        assert_eq!(s.get(Space::Trace, "l").await.unwrap(), None);
        assert!(s
            .swap(Space::Trace, "p", Some(br#"["w","x"]"#), b"1".to_vec(), ttl)
            .await
            .unwrap());
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
