//! The live client sessions, for `/admin/clients` and the client-state gauges.
//!
//! A session registers once authenticated and is removed when its [`ClientHandle`]
//! drops. The relay updates its entry with plain atomics (state, backend pid), so
//! the hot path takes no lock; only registering, leaving and reading do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// Between transactions.
    Idle = 0,
    /// Waiting for the pool to lend a server connection.
    Waiting = 1,
    /// In a transaction, served by a server connection.
    Active = 2,
}

/// What `/admin/clients` shows of one session: never its token.
#[derive(Debug)]
pub struct ClientEntry {
    id: u64,
    peer: SocketAddr,
    tenant: String,
    subject: Option<String>,
    database: String,
    connected_at: u64,
    started: Instant,
    state: AtomicU8,
    backend_pid: AtomicI32,
}

impl ClientEntry {
    /// Records the session's state.
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Records the backend serving the session (0: none).
    pub fn set_backend_pid(&self, pid: i32) {
        self.backend_pid.store(pid, Ordering::Relaxed);
    }

    fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            2 => ClientState::Active,
            1 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }
}

/// One row of `/admin/clients`.
#[derive(Debug, Serialize)]
pub struct ClientView {
    /// Registry id, stable for the session.
    pub id: u64,
    /// Client address.
    pub peer: String,
    /// Tenant from the token.
    pub tenant: String,
    /// `sub` from the token.
    pub subject: Option<String>,
    /// Database asked for.
    pub database: String,
    /// State now.
    pub state: ClientState,
    /// Backend pid of the server connection serving it, if any.
    pub backend_pid: Option<i32>,
    /// Seconds since the epoch when it connected.
    pub connected_at: u64,
    /// Seconds since it connected.
    pub age_s: u64,
}

/// Every live session.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<ClientEntry>>>,
}

/// A session's registration; dropping it removes the entry.
#[derive(Debug)]
pub struct ClientHandle {
    entry: Arc<ClientEntry>,
    registry: Arc<ClientRegistry>,
}

impl std::ops::Deref for ClientHandle {
    type Target = ClientEntry;
    fn deref(&self) -> &ClientEntry {
        &self.entry
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.id);
    }
}

impl ClientRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ClientEntry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an authenticated session.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        tenant: &str,
        subject: Option<&str>,
        database: &str,
    ) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connected_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            tenant: tenant.to_string(),
            subject: subject.map(str::to_string),
            database: database.to_string(),
            connected_at,
            started: Instant::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            backend_pid: AtomicI32::new(0),
        });
        self.lock().insert(id, entry.clone());
        ClientHandle { entry, registry: self.clone() }
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<ClientView> {
        let mut rows: Vec<ClientView> = self
            .lock()
            .values()
            .map(|e| ClientView {
                id: e.id,
                peer: e.peer.to_string(),
                tenant: e.tenant.clone(),
                subject: e.subject.clone(),
                database: e.database.clone(),
                state: e.state(),
                backend_pid: Some(e.backend_pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0),
                connected_at: e.connected_at,
                age_s: e.started.elapsed().as_secs(),
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Sessions by state: (active, idle, waiting).
    pub fn counts(&self) -> (i64, i64, i64) {
        self.lock().values().fold((0, 0, 0), |(a, i, w), e| match e.state() {
            ClientState::Active => (a + 1, i, w),
            ClientState::Idle => (a, i + 1, w),
            ClientState::Waiting => (a, i, w + 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_handle() {
        let registry = Arc::new(ClientRegistry::default());
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let a = registry.register(peer, "1", Some("alice"), "app");
        let b = registry.register(peer, "2", None, "app");
        a.set_state(ClientState::Active);
        a.set_backend_pid(42);
        assert_eq!(registry.counts(), (1, 1, 0));
        let rows = registry.list();
        assert_eq!((rows[0].tenant.as_str(), rows[0].backend_pid, rows[0].state), ("1", Some(42), ClientState::Active));
        assert_eq!((rows[1].subject.as_deref(), rows[1].backend_pid), (None, None));
        drop(a);
        b.set_state(ClientState::Waiting);
        assert_eq!(registry.counts(), (0, 0, 1));
        drop(b);
        assert!(registry.list().is_empty());
    }
}
