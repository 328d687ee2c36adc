//! `/readyz`: whether this proxy can serve a client now, without adding load to the
//! database: ready while not shutting down and the pool is usable (a connection is open,
//! or the last attempt to open one succeeded). Only when neither holds does a probe open
//! a connection itself, at most once per [`PROBE_EVERY`], so that a proxy whose database
//! came back becomes ready again even with no client to try.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::pool::Pool;

/// How often, at most, a probe opens a connection while the pool is not usable.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The last probe that opened a connection, and its answer.
#[derive(Debug, Default)]
pub struct Readiness {
    last_probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Ready unless shutting down or the pool is not usable; see the module's comment.
    pub async fn check(
        &self,
        shutting_down: bool,
        pool: &Pool,
        database: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        if shutting_down {
            return Err("shutting down".into());
        }
        let (health, open) = pool.health();
        let last_succeeded = match (&health.last_ok, &health.last_failure) {
            (Some(ok), Some((failed, _))) => ok > failed,
            (ok, _) => ok.is_some(),
        };
        if open > 0 || last_succeeded {
            return Ok(());
        }
        let mut last = self.last_probe.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < PROBE_EVERY
        {
            return result.clone();
        }
        let result = match tokio::time::timeout(timeout, pool.check_upstream(database)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("upstream: {e}")),
            Err(_) => Err("upstream: no answer in time".into()),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
