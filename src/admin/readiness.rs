//! `/readyz`: whether this proxy can serve a client now.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::server::Shared;

/// How long a probe's answer is reused: probes from several kubelets or load balancers then
/// open at most one upstream connection per second between them.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The last upstream check and when it ran.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Ready unless shutting down or the upstream refuses: a connection is opened as the proxy's
    /// role and passes the same safety checks as a pooled one (then closed, outside the pool).
    pub async fn check(&self, shared: &Shared) -> Result<(), String> {
        if *shared.shutdown.borrow() {
            return Err("shutting down".into());
        }
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return result.clone();
        }
        let database = shared.live().config.upstream.database.clone().unwrap_or_else(|| "postgres".into());
        let timeout = Duration::from_millis(shared.live().config.upstream.connect_timeout_ms.saturating_add(1000));
        let result = match tokio::time::timeout(timeout, shared.pool.check_upstream(&database)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("upstream: {e}")),
            Err(_) => Err("upstream: no answer in time".into()),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
