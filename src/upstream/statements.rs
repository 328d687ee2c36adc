//! Which client statements are prepared on one server connection (transaction
//! pooling), under proxy-owned names, bounded with least-recently-used eviction
//! like PgBouncer's `max_prepared_statements`.

use std::collections::HashMap;

use bytes::Bytes;

/// Prepared statements of one server connection.
#[derive(Debug, Default)]
pub struct StatementCache {
    /// Server name → (query and parameter types as sent, last use).
    named: HashMap<String, (Bytes, u64)>,
    tick: u64,
    /// The whole Parse message last sent for the unnamed statement, which is whoever's parsed last.
    pub unnamed: Option<Bytes>,
}

impl StatementCache {
    /// True when `name` is prepared with exactly `text`; marks it used.
    pub fn has(&mut self, name: &str, text: &[u8]) -> bool {
        self.tick += 1;
        match self.named.get_mut(name) {
            Some((known, used)) if known[..] == text[..] => {
                *used = self.tick;
                true
            }
            _ => false,
        }
    }

    /// Records `name` as prepared; returns the names to close first to stay within `capacity`.
    pub fn insert(&mut self, name: String, text: Bytes, capacity: usize) -> Vec<String> {
        self.tick += 1;
        let mut evicted = Vec::new();
        while self.named.len() >= capacity.max(1) && !self.named.contains_key(&name) {
            let Some(oldest) = self.named.iter().min_by_key(|(_, (_, used))| *used).map(|(n, _)| n.clone()) else {
                break;
            };
            self.named.remove(&oldest);
            evicted.push(oldest);
        }
        self.named.insert(name, (text, self.tick));
        evicted
    }

    /// Forgets `name` (its Parse failed or was skipped).
    pub fn remove(&mut self, name: &str) {
        self.named.remove(name);
    }

    /// Forgets everything (after DISCARD ALL).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }

    /// Statements prepared.
    pub fn len(&self) -> usize {
        self.named.len()
    }

    /// No statement prepared.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut c = StatementCache::default();
        assert!(c.insert("a".into(), Bytes::from_static(b"select 1"), 2).is_empty());
        assert!(c.insert("b".into(), Bytes::from_static(b"select 2"), 2).is_empty());
        assert!(c.has("a", b"select 1"));
        assert!(!c.has("a", b"select 9"), "same name, other text: not the same statement");
        assert_eq!(c.insert("c".into(), Bytes::from_static(b"select 3"), 2), vec!["b".to_string()]);
        assert!(c.has("a", b"select 1") && c.has("c", b"select 3") && !c.has("b", b"select 2"));
        assert_eq!(c.len(), 2);
    }
}
