//! `/readyz`: whether this proxy can serve a client now.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::pool::Pool;

/// How long a probe's answer is reused: probes from several kubelets or load balancers then
/// open at most one upstream connection per second between them.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The last upstream check and when it ran.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Ready unless shutting down or the upstream refuses: a connection to `database` is opened
    /// as the proxy's role and passes the same safety checks as a pooled one (then closed,
    /// outside the pool), within `timeout`.
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
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
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
