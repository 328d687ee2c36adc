//! Proxy-issued cancel keys. A client only ever learns a random secret of the
//! proxy's; its key maps to the server connection serving that client right now, so
//! a CancelRequest can reach that client's query and nothing else. In session pooling
//! the process id is the server connection's real one (clients compare it with
//! `pg_backend_pid()` and notifications' senders), so keys are looked up by process id
//! and secret together: the same pid may be given again, by another server, or to the
//! next client of the connection before the previous one's key is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use std::sync::atomic::Ordering;

use crate::admin::metrics::CancelOutcome;
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
    pub async fn cancel(&self) -> CancelOutcome {
        let _held = self.gate.lock.lock().await;
        if self.gate.generation.load(Ordering::SeqCst) != self.generation {
            tracing::info!("cancel request arrived after the transaction ended; dropped");
            return CancelOutcome::Stale;
        }
        tracing::info!(backend_pid = self.key.pid, "forwarding cancel request");
        match self.key.cancel().await {
            Ok(()) => CancelOutcome::Forwarded,
            Err(e) => {
                tracing::warn!(error = %e, "cancel request to the upstream server failed");
                CancelOutcome::Failed
            }
        }
    }

    /// The backend process id, for tests.
    pub fn backend_pid(&self) -> i32 {
        self.key.pid
    }
}

/// (pid, secret) given to a client → the client's current server connection.
type Entries = HashMap<(i32, i32), Option<CancelTarget>>;

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

    /// Issues a key: `pid` (the server connection's, in session pooling) or a random one,
    /// and a random secret.
    pub fn register(&self, pid: Option<i32>) -> Registration {
        let mut rng = rand::rng();
        let mut map = self.lock();
        let key = loop {
            let key = (pid.unwrap_or_else(|| rng.random_range(1..i32::MAX)), rng.random());
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, None);
        Registration { registry: self.clone(), pid: key.0, secret: key.1 }
    }

    /// The upstream target of a key, if the pair matches a live registration.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<CancelTarget> {
        self.lock().get(&(pid, secret)).cloned().flatten()
    }
}

impl Registration {
    /// Points the key at the server connection now serving the client (`None`: none).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        if let Some(entry) = self.registry.lock().get_mut(&(self.pid, self.secret)) {
            *entry = target;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&(self.pid, self.secret));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_finds_the_target() {
        let reg = CancelRegistry::default();
        let target = |pid| {
            let key = CancelKey { addr: ([127, 0, 0, 1], 5432).into(), pid, secret: 7 };
            Some(CancelTarget { key, gate: Arc::default(), generation: 0 })
        };
        let a = reg.register(None);
        a.set_target(target(42));
        assert_eq!(reg.lookup(a.pid, a.secret).map(|t| t.backend_pid()), Some(42));
        assert!(reg.lookup(a.pid, a.secret.wrapping_add(1)).is_none());
        // Two clients given the same (real) pid: each secret finds its own target only.
        let (b, c) = (reg.register(Some(42)), reg.register(Some(42)));
        b.set_target(target(42));
        assert_eq!((b.pid, c.pid), (42, 42));
        assert_eq!(reg.lookup(42, b.secret).map(|t| t.backend_pid()), Some(42));
        assert!(reg.lookup(42, c.secret).is_none(), "c has no query running");
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert!(reg.lookup(pid, secret).is_none());
        drop(c);
        assert!(reg.lookup(42, b.secret).is_some(), "b's key outlives c's");
    }
}
