//! Proxy-issued cancel keys. A client only ever learns a random key of the
//! proxy's; it maps to the server connection serving that client right now, so
//! a CancelRequest can reach that client's query and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use std::sync::atomic::Ordering;

use crate::upstream::{CancelKey, LendGate, ServerConn};

/// The server connection serving a client right now, as seen when it was lent.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    key: CancelKey,
    gate: Arc<LendGate>,
    generation: u64,
}

impl CancelTarget {
    /// The target for `conn` as lent now.
    pub fn of(conn: &ServerConn) -> Self {
        Self { key: conn.cancel_key, gate: conn.gate.clone(), generation: conn.gate.generation.load(Ordering::SeqCst) }
    }

    /// Sends the cancel, unless the connection has changed hands since it was looked up.
    pub async fn cancel(&self) {
        let _held = self.gate.lock.lock().await;
        if self.gate.generation.load(Ordering::SeqCst) != self.generation {
            tracing::info!("cancel request arrived after the transaction ended; dropped");
            return;
        }
        tracing::info!(backend_pid = self.key.pid, "forwarding cancel request");
        if let Err(e) = self.key.cancel().await {
            tracing::warn!(error = %e, "cancel request to the upstream server failed");
        }
    }

    /// The backend process id, for tests.
    pub fn backend_pid(&self) -> i32 {
        self.key.pid
    }
}

/// Proxy pid → (proxy secret, the client's current server connection).
type Entries = HashMap<i32, (i32, Option<CancelTarget>)>;

/// Live proxy keys and their current upstream target.
#[derive(Debug, Default, Clone)]
pub struct CancelRegistry {
    map: Arc<Mutex<Entries>>,
}

/// A registered key; unregistered on drop.
#[derive(Debug)]
pub struct Registration {
    registry: CancelRegistry,
    /// Process id the client was given.
    pub pid: i32,
    /// Secret the client was given.
    pub secret: i32,
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh random key.
    pub fn register(&self) -> Registration {
        let mut rng = rand::rng();
        let mut map = self.lock();
        let (pid, secret) = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !map.contains_key(&pid) {
                break (pid, rng.random());
            }
        };
        map.insert(pid, (secret, None));
        Registration { registry: self.clone(), pid, secret }
    }

    /// The upstream target of a key, if the pair matches a live registration.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        let map = self.lock();
        let (expected, target) = map.get(&pid)?;
        if *expected == secret { target.clone() } else { None }
    }
}

impl Registration {
    /// Points the key at the server connection now serving the client (`None`: none).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        if let Some(entry) = self.registry.lock().get_mut(&self.pid) {
            entry.1 = target;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_finds_the_target() {
        let reg = CancelRegistry::default();
        let a = reg.register();
        let key = CancelKey { addr: ([127, 0, 0, 1], 5432).into(), pid: 42, secret: 7 };
        a.set_target(Some(CancelTarget { key, gate: Arc::default(), generation: 0 }));
        assert_eq!(reg.lookup(a.pid, a.secret).map(|t| t.backend_pid()), Some(42));
        assert!(reg.lookup(a.pid, a.secret.wrapping_add(1)).is_none());
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert!(reg.lookup(pid, secret).is_none());
    }
}
