//! The verdict cache: SHA-256 of the cache key (see `key`) → the violations found.
//! Keyed by a collision-resistant hash, so an entry costs the same whatever the length of
//! its text and no text can be made to share another's verdict; bounded in bytes (each
//! entry's violations counted), emptied when full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use super::rule::Violation;

/// Bytes the cache may hold (keys, violations and bookkeeping, estimated).
const MAX_BYTES: usize = 4 << 20;
/// Estimated bytes per entry besides its violations' texts (key, Arc, map slot).
const ENTRY_OVERHEAD: usize = 96;

/// The cache key's digest.
pub(super) type Digest = [u8; 32];

/// The digest of `key`.
pub(super) fn digest(key: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, key).as_ref());
    out
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Digest, Arc<[Violation]>>,
    bytes: usize,
}

/// Verdicts shared by every session.
#[derive(Debug, Default)]
pub(super) struct Verdicts(Mutex<Entries>);

impl Verdicts {
    pub(super) fn get(&self, key: &Digest) -> Option<Arc<[Violation]>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).map.get(key).cloned()
    }

    pub(super) fn insert(&self, key: Digest, found: Arc<[Violation]>) {
        let size = ENTRY_OVERHEAD + found.iter().map(|v| size_of::<Violation>() + v.what.len()).sum::<usize>();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if entries.bytes + size > MAX_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
        if entries.map.insert(key, found).is_none() {
            entries.bytes += size;
        }
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}
