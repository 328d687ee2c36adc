//! Upstream connection pool: at most `pool.size` server connections, idle ones
//! kept per database, clients waiting up to `acquire_timeout_ms` for one.
//!
//! Every new connection passes the upstream-role safety check before use, and a
//! connection only returns to the idle list after a reset (`DISCARD ALL`) that
//! left it idle: session state never passes from one client to the next.

use std::ops::{Deref, DerefMut};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::policy::upstream_role;
use crate::protocol::frontend;
use crate::upstream::{ServerConn, UpstreamError, UpstreamTarget};

/// Why no connection could be lent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("no upstream connection became available within {0} ms (pool.size reached)")]
    Timeout(u64),
    /// Opening a new connection failed.
    #[error("cannot connect to the upstream server: {0}")]
    Connect(#[from] UpstreamError),
}

/// A shared handle to the pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: UpstreamTarget,
    size: usize,
    acquire_timeout: Duration,
    idle_timeout: Duration,
    /// Roles a token may select: a new connection must not inherit any of them.
    allowed_roles: Vec<String>,
    state: Mutex<State>,
    /// Woken when a connection returns or closes, so waiters re-check.
    returned: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Connections that exist (idle + lent + being opened); never above `size`.
    open: usize,
    idle: Vec<ServerConn>,
}

impl Pool {
    /// A pool for `target`; opens nothing until asked.
    pub fn new(target: UpstreamTarget, cfg: &PoolConfig, allowed_roles: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                target,
                size: cfg.size,
                acquire_timeout: Duration::from_millis(cfg.acquire_timeout_ms),
                idle_timeout: Duration::from_secs(cfg.idle_timeout_s),
                allowed_roles,
                state: Mutex::new(State::default()),
                returned: Notify::new(),
            }),
        }
    }

    /// Opens one connection outside the pool and runs the safety check (used at start).
    pub async fn check_upstream(&self, database: &str) -> Result<(), UpstreamError> {
        let conn = self.inner.open(database).await?;
        conn.terminate().await;
        Ok(())
    }

    /// Lends a connection to `database`, waiting up to the acquire timeout.
    pub async fn acquire(&self, database: &str) -> Result<Lease, PoolError> {
        let deadline = Instant::now() + self.inner.acquire_timeout;
        loop {
            let mut notified = pin!(self.inner.returned.notified());
            notified.as_mut().enable();
            match self.inner.take_or_reserve(database) {
                Some(Ok(conn)) => return Ok(self.lease(conn)),
                Some(Err(())) => {
                    return match self.inner.open(database).await {
                        Ok(conn) => Ok(self.lease(conn)),
                        Err(e) => {
                            self.inner.forget_one();
                            Err(PoolError::Connect(e))
                        }
                    };
                }
                None => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(PoolError::Timeout(self.inner.acquire_timeout.as_millis() as u64));
            }
        }
    }

    fn lease(&self, conn: ServerConn) -> Lease {
        Lease { conn: Some(conn), pool: self.inner.clone() }
    }

    /// Connections open and idle, for tests and metrics.
    pub fn stats(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.open, state.idle.len())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent
        // (every update is a single statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection for `database` (`Ok`), a reserved slot to open one (`Err(())`), or nothing.
    fn take_or_reserve(&self, database: &str) -> Option<Result<ServerConn, ()>> {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        let before = state.idle.len();
        state.idle.retain(|c| now.duration_since(c.created) < self.idle_timeout);
        state.open -= before - state.idle.len();
        if let Some(pos) = state.idle.iter().rposition(|c| c.database == database) {
            return Some(Ok(state.idle.swap_remove(pos)));
        }
        if state.open < self.size {
            state.open += 1;
            return Some(Err(()));
        }
        if !state.idle.is_empty() {
            // Full, but an idle connection to another database can make room.
            state.idle.remove(0);
            return Some(Err(()));
        }
        None
    }

    fn forget_one(&self) {
        self.lock().open -= 1;
        self.returned.notify_one();
    }

    async fn open(&self, database: &str) -> Result<ServerConn, UpstreamError> {
        let mut conn = ServerConn::connect(&self.target, database).await?;
        upstream_role::check(&mut conn, &self.allowed_roles).await?;
        tracing::debug!(backend_pid = conn.pid(), database, "opened upstream connection");
        Ok(conn)
    }
}

/// A connection lent to one client; dropping it closes the connection.
#[derive(Debug)]
pub struct Lease {
    conn: Option<ServerConn>,
    pool: Arc<Inner>,
}

impl Lease {
    /// Resets the connection's session state and returns it to the pool; closes it if that fails.
    /// Call only when the connection is idle with nothing in flight.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let mut buf = BytesMut::new();
        frontend::query(&mut buf, "DISCARD ALL");
        let reset = tokio::time::timeout(Duration::from_secs(5), conn.run_batch(&buf)).await;
        match reset {
            Ok(Ok(outcome)) if outcome.error.is_none() && outcome.status == b'I' => {
                conn.injection_prepared = false;
                conn.context = None;
                self.pool.lock().idle.push(conn);
                self.pool.returned.notify_one();
            }
            _ => {
                tracing::warn!("upstream reset failed; closing the connection");
                self.pool.forget_one();
            }
        }
    }
}

impl Deref for Lease {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `conn` is `Some` until `release` or `drop` consume the lease.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.forget_one();
        }
    }
}
