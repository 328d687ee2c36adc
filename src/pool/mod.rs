//! Upstream connection pool: at most `pool.size` server connections, idle ones
//! kept per database, clients queued first-come first-served for up to
//! `acquire_timeout_ms`, at most `max_waiting_clients` of them.
//!
//! Every new connection passes the upstream-role safety check before use. A
//! connection remembers whose session state it carries (`ServerConn::owner`):
//! the pool prefers handing a client a connection it or its identity last used
//! (tenant affinity), and the session resets a connection that carried another
//! identity's state before using it. Session-mode connections are reset with
//! `DISCARD ALL` when the client leaves.
//!
//! Sizes, timeouts and the allowed roles can change while the pool runs (a configuration
//! reload, [`Pool::reconfigure`]): a smaller size closes idle connections above it at once and
//! lent ones when they come back, never a lent one; a larger size serves waiting clients at once.

mod lease;
pub mod pins;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::PoolConfig;
use crate::policy::upstream_role;
use crate::upstream::{ServerConn, UpstreamError, UpstreamTarget};

pub use lease::Lease;

/// Why no connection could be lent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("no upstream connection became available within {0} ms (pool.size reached)")]
    Timeout(u64),
    /// Too many clients are already waiting.
    #[error("too many clients are waiting for an upstream connection (pool.max_waiting_clients = {0})")]
    QueueFull(usize),
    /// Opening a new connection failed.
    #[error("cannot connect to the upstream server: {0}")]
    Connect(#[from] UpstreamError),
}

/// The pool at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolSnapshot {
    /// `pool.mode`.
    pub mode: crate::config::PoolMode,
    /// `pool.size`.
    pub size: usize,
    /// Connections that exist: idle, lent, or being opened.
    pub open: usize,
    /// Idle connections.
    pub idle: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
    /// Idle connections by what they serve.
    pub idle_by_key: Vec<IdleGroup>,
}

/// Idle connections for one database and one set of client startup settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleGroup {
    /// Database.
    pub database: String,
    /// Startup settings (application_name, DateStyle…) the connections were opened with.
    pub settings: Vec<(String, String)>,
    /// How many.
    pub idle: usize,
}

/// A shared handle to the pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: UpstreamTarget,
    /// `upstream.allow_unforced_owned_tables`.
    allow_unforced: bool,
    state: Mutex<State>,
    /// How the last attempts to open a connection went (readiness reads it).
    health: Mutex<Health>,
}

/// The outcome of the pool's attempts to open connections.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When a connection last opened (and passed the safety checks).
    pub last_ok: Option<Instant>,
    /// When an attempt last failed, and why.
    pub last_failure: Option<(Instant, String)>,
    /// Connections opened since start, the checks' included.
    pub opened: u64,
}

#[derive(Debug)]
struct State {
    /// `[pool]`: here, under the lock, so that a reload changes it between two pool operations.
    cfg: PoolConfig,
    /// Roles a token may select: a new connection must not inherit any of them (reloadable
    /// with `jwt.allowed_roles`).
    allowed_roles: Vec<String>,
    /// Connections that exist (idle + lent + being opened); above `size` only after the size
    /// shrank, until enough lent ones come back.
    open: usize,
    idle: Vec<ServerConn>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

/// What a waiting client is handed: a connection, or a slot to open one.
type Handoff = Option<ServerConn>;

#[derive(Debug)]
struct Waiter {
    id: u64,
    database: String,
    startup: Vec<(String, String)>,
    tx: oneshot::Sender<Handoff>,
}

/// A connection can serve a client of `database` whose startup settings are `startup`: they
/// are the connection's own startup parameters, so `RESET` returns to them as in PostgreSQL.
fn serves(conn: &ServerConn, database: &str, startup: &[(String, String)]) -> bool {
    conn.database == database && conn.startup == startup
}

impl Pool {
    /// A pool for `target`; opens nothing until asked.
    pub fn new(target: UpstreamTarget, cfg: &PoolConfig, allowed_roles: Vec<String>, allow_unforced: bool) -> Self {
        let state = State {
            cfg: cfg.clone(),
            allowed_roles,
            open: 0,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            next_waiter: 0,
        };
        let health = Mutex::new(Health::default());
        Self { inner: Arc::new(Inner { target, allow_unforced, state: Mutex::new(state), health }) }
    }

    /// Applies a reloaded `[pool]` (its `mode` excepted: that needs a restart) and
    /// `jwt.allowed_roles`. Idle connections above a smaller size are closed now, lent ones
    /// when they come back; with a larger size, waiting clients get a slot to open one.
    pub fn reconfigure(&self, cfg: &PoolConfig, allowed_roles: &[String]) {
        let mut state = self.inner.lock();
        let mode = state.cfg.mode;
        state.cfg = PoolConfig { mode, ..cfg.clone() };
        if state.allowed_roles != allowed_roles {
            // Idle connections passed the safety check against the old roles: open new ones.
            state.allowed_roles = allowed_roles.to_vec();
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
        }
        while state.open > state.cfg.size && !state.idle.is_empty() {
            state.idle.remove(0);
            state.open -= 1;
        }
        self.inner.expire(&mut state);
        while state.open < state.cfg.size {
            let Some(waiter) = state.waiters.pop_front() else { break };
            if waiter.tx.send(None).is_ok() {
                state.open += 1;
            }
        }
    }

    /// Opens one connection outside the pool and runs the safety check (used at start).
    pub async fn check_upstream(&self, database: &str) -> Result<(), UpstreamError> {
        let roles = self.inner.lock().allowed_roles.clone();
        self.check_upstream_for(database, &roles).await
    }

    /// As [`Pool::check_upstream`], against `allowed_roles` instead of the current ones: a
    /// reload checks its new `jwt.allowed_roles` before applying them.
    pub async fn check_upstream_for(&self, database: &str, allowed_roles: &[String]) -> Result<(), UpstreamError> {
        let conn = self.inner.open_checked(database, &[], allowed_roles).await?;
        conn.terminate().await;
        Ok(())
    }

    /// Lends a connection to `database` opened with `startup` settings, preferring one last
    /// used by `owner`.
    pub async fn acquire(
        &self,
        database: &str,
        owner: &Bytes,
        startup: &[(String, String)],
    ) -> Result<Lease, PoolError> {
        let ticket = {
            let mut state = self.inner.lock();
            self.inner.expire(&mut state);
            if let Some(conn) = take_idle(&mut state, database, owner, startup) {
                return Ok(self.lease(conn));
            }
            if state.open < state.cfg.size {
                state.open += 1;
                None
            } else if state.open == state.cfg.size && !state.idle.is_empty() {
                // Full, but an idle connection for other clients' database or settings makes room.
                state.idle.remove(0);
                None
            } else if state.waiters.len() >= state.cfg.max_waiting_clients {
                return Err(PoolError::QueueFull(state.cfg.max_waiting_clients));
            } else {
                let (tx, rx) = oneshot::channel();
                let id = state.next_waiter;
                state.next_waiter += 1;
                let (database, startup) = (database.to_string(), startup.to_vec());
                state.waiters.push_back(Waiter { id, database, startup, tx });
                Some((id, rx, state.cfg.acquire_timeout_ms))
            }
        };
        let handoff = match ticket {
            None => None,
            // Boxed, like `open` below: the rare paths' state would otherwise be part of every
            // session task's size, idle or not.
            Some((id, rx, timeout_ms)) => Box::pin(self.wait(id, rx, timeout_ms)).await?,
        };
        match handoff {
            Some(conn) => Ok(self.lease(conn)),
            None => match Box::pin(self.inner.open(database, startup)).await {
                Ok(conn) => Ok(self.lease(conn)),
                Err(e) => {
                    self.inner.closed_one();
                    Err(PoolError::Connect(e))
                }
            },
        }
    }

    async fn wait(&self, id: u64, mut rx: oneshot::Receiver<Handoff>, timeout_ms: u64) -> Result<Handoff, PoolError> {
        let timeout = Duration::from_millis(timeout_ms);
        if let Ok(Ok(handoff)) = tokio::time::timeout(timeout, &mut rx).await {
            return Ok(handoff);
        }
        let still_waiting = {
            let mut state = self.inner.lock();
            let before = state.waiters.len();
            state.waiters.retain(|w| w.id != id);
            state.waiters.len() < before
        };
        if still_waiting {
            return Err(PoolError::Timeout(timeout_ms));
        }
        // Handed over just as the timeout fired: take it rather than lose the slot.
        rx.await.map_err(|_| PoolError::Timeout(timeout_ms))
    }

    fn lease(&self, conn: ServerConn) -> Lease {
        Lease { conn: Some(conn), pool: self.inner.clone() }
    }

    /// How opening connections has gone, and how many are open.
    pub fn health(&self) -> (Health, usize) {
        let open = self.inner.lock().open;
        let health = self.inner.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        (health, open)
    }

    /// Connections open and idle, for tests and metrics.
    pub fn stats(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.open, state.idle.len())
    }

    /// What `/admin/pools` and the metrics show.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = self.inner.lock();
        let mut idle_by_key: Vec<IdleGroup> = Vec::new();
        for conn in &state.idle {
            match idle_by_key.iter_mut().find(|g| serves(conn, &g.database, &g.settings)) {
                Some(group) => group.idle += 1,
                None => idle_by_key.push(IdleGroup {
                    database: conn.database.clone(),
                    settings: conn.startup.clone(),
                    idle: 1,
                }),
            }
        }
        PoolSnapshot {
            mode: state.cfg.mode,
            size: state.cfg.size,
            open: state.open,
            idle: state.idle.len(),
            waiting: state.waiters.len(),
            idle_by_key,
        }
    }

    /// Keeps `min_idle` clean connections to `database` open and closes expired idle ones,
    /// until the pool is dropped.
    pub async fn maintain(self, database: String) {
        let weak = Arc::downgrade(&self.inner);
        drop(self);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(inner) = weak.upgrade() else { return };
            let wanted = {
                let mut state = inner.lock();
                inner.expire(&mut state);
                let idle = state.idle.iter().filter(|c| serves(c, &database, &[])).count();
                let room = state.cfg.size.saturating_sub(state.open);
                let wanted = state.cfg.min_idle.saturating_sub(idle).min(room);
                state.open += wanted;
                wanted
            };
            for _ in 0..wanted {
                match inner.open(&database, &[]).await {
                    Ok(conn) => inner.put_back(conn),
                    Err(e) => {
                        inner.closed_one();
                        tracing::warn!(error = %e, "could not open a warm upstream connection");
                        break;
                    }
                }
            }
        }
    }
}

/// An idle connection that serves `database` and `startup`: one last used by `owner`, else a
/// clean one, else any. Connections that received anything while idle are closed instead
/// (see `ServerConn::is_quiet`).
fn take_idle(state: &mut State, database: &str, owner: &Bytes, startup: &[(String, String)]) -> Option<ServerConn> {
    let before = state.idle.len();
    state.idle.retain(|c| c.is_quiet());
    state.open -= before - state.idle.len();
    let rank = |c: &ServerConn| match &c.owner {
        Some(o) if o == owner => 0,
        None => 1,
        Some(_) => 2,
    };
    let pos =
        state.idle.iter().enumerate().filter(|(_, c)| serves(c, database, startup)).min_by_key(|(_, c)| rank(c))?.0;
    Some(state.idle.swap_remove(pos))
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single statement, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections past the idle timeout or the lifetime limit.
    fn expire(&self, state: &mut State) {
        let now = Instant::now();
        let idle_timeout = Duration::from_secs(state.cfg.idle_timeout_s);
        let lifetime = Duration::from_secs(state.cfg.max_lifetime_s);
        let before = state.idle.len();
        state.idle.retain(|c| now - c.last_used < idle_timeout && now - c.created < lifetime);
        state.open -= before - state.idle.len();
    }

    /// A connection stopped existing: its slot goes to the first waiter, if any (unless the
    /// pool is above a size that shrank).
    fn closed_one(&self) {
        let mut state = self.lock();
        while state.open <= state.cfg.size
            && let Some(waiter) = state.waiters.pop_front()
        {
            if waiter.tx.send(None).is_ok() {
                return;
            }
        }
        state.open -= 1;
    }

    /// A usable connection came back: to the first waiter for its database, else idle; closed
    /// when too old, or when the pool is above a size that shrank.
    fn put_back(&self, mut conn: ServerConn) {
        let mut state = self.lock();
        let too_old = conn.created.elapsed() >= Duration::from_secs(state.cfg.max_lifetime_s);
        if too_old || state.open > state.cfg.size {
            drop(state);
            drop(conn);
            self.closed_one();
            return;
        }
        conn.last_used = Instant::now();
        while let Some(pos) = state.waiters.iter().position(|w| serves(&conn, &w.database, &w.startup)) {
            let Some(waiter) = state.waiters.remove(pos) else { break };
            match waiter.tx.send(Some(conn)) {
                Ok(()) => return,
                // That client stopped waiting; try the next one.
                Err(back) => match back {
                    Some(back) => conn = back,
                    None => return,
                },
            }
        }
        if state.waiters.is_empty() {
            state.idle.push(conn);
            return;
        }
        // Only clients of other databases or settings wait: close this one, hand over its slot.
        drop(state);
        drop(conn);
        self.closed_one();
    }

    async fn open(&self, database: &str, startup: &[(String, String)]) -> Result<ServerConn, UpstreamError> {
        let allowed_roles = self.lock().allowed_roles.clone();
        self.open_checked(database, startup, &allowed_roles).await
    }

    async fn open_checked(
        &self,
        database: &str,
        startup: &[(String, String)],
        allowed_roles: &[String],
    ) -> Result<ServerConn, UpstreamError> {
        let opened = self.open_and_check(database, startup, allowed_roles).await;
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &opened {
            Ok(_) => {
                health.last_ok = Some(Instant::now());
                health.opened += 1;
            }
            Err(e) => health.last_failure = Some((Instant::now(), e.to_string())),
        }
        opened
    }

    async fn open_and_check(
        &self,
        database: &str,
        startup: &[(String, String)],
        allowed_roles: &[String],
    ) -> Result<ServerConn, UpstreamError> {
        let mut conn = ServerConn::connect(&self.target, database, startup).await?;
        // A database or role setting an operator made: refused before any client uses it.
        if let Some(reason) = conn.params.iter().find_map(|(name, value)| crate::upstream::unsafe_setting(name, value))
        {
            return Err(UpstreamError::UnsafeSetting(reason));
        }
        upstream_role::check(&mut conn, allowed_roles, self.allow_unforced).await?;
        tracing::debug!(backend_pid = conn.pid(), database, "opened upstream connection");
        Ok(conn)
    }
}
