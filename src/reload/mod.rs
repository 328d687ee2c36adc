//! Live reload: SIGHUP, or the file watch, reads the configuration again (same file, same
//! `RLSPROXY__…` overrides), validates it whole, builds every reloadable component from it, and
//! only when all of that succeeded swaps them in at once ([`Live`]). Anything wrong (a
//! validation error, an unreadable key file, a failed first fetch of a new `jwks_url`) leaves
//! the running configuration exactly as it was, with an `error` line naming the key.
//!
//! Open sessions are not interrupted: their identity was verified when they connected and
//! their server connections stay theirs. New connections meet the new keys and settings; every
//! session meets the new guard at its next statement.
//!
//! - `live.rs`: [`Live`], the swapped value;
//! - `restart.rs`: the keys that need a restart (kept at their running values, with a warning);
//! - `watch.rs`: fingerprints of the files the file watch compares.

pub mod live;
mod restart;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use live::Live;
pub use restart::{RESTART_KEYS, changed_keys};

use crate::config::{Config, ConfigError};
use crate::logging::LogHandle;
use crate::shared::Shared;
use crate::upstream::UpstreamError;
use watch::Seen;

/// Reloads one proxy's configuration from its file.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    /// The log filter's reload handle (`None` in tests that run the proxy in-process).
    log: Option<LogHandle>,
    /// One reload at a time: SIGHUP and the file watch may coincide.
    serial: tokio::sync::Mutex<()>,
    /// What the last attempt read, for the file watch.
    seen: Mutex<Seen>,
}

impl Reloader {
    /// A reloader for the proxy whose running configuration was loaded from `path`, whose text
    /// was `text`.
    pub fn new(shared: Arc<Shared>, path: &Path, text: &str, log: Option<LogHandle>) -> Self {
        let files: Vec<PathBuf> = shared.live().config.reloadable_files().into_iter().map(Path::to_path_buf).collect();
        let seen = Seen { fingerprint: watch::fingerprint(Ok(text), &files), files };
        Self { shared, path: path.to_path_buf(), log, serial: tokio::sync::Mutex::new(()), seen: Mutex::new(seen) }
    }

    /// Reloads now; `trigger` (`SIGHUP`, `file watch`) is logged. Logs the outcome (info, or
    /// error naming the key) and counts it in `rlsproxy_config_reloads_total{result}`.
    pub async fn reload(&self, trigger: &'static str) -> Result<(), ConfigError> {
        let _one_at_a_time = self.serial.lock().await;
        match self.try_reload().await {
            Ok(changed) => {
                self.shared.metrics.config_reload("ok");
                let changed = if changed.is_empty() { "none (files reread)".to_string() } else { changed.join(", ") };
                tracing::info!(trigger, changed, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.shared.metrics.config_reload("error");
                tracing::error!(trigger, error = %e, "configuration reload refused; the running configuration stays");
                Err(e)
            }
        }
    }

    /// Every `[reload] watch_interval_s` (read anew each time: a reload may turn it on or off),
    /// reloads when the configuration file or a file it names changed. Runs until dropped.
    pub async fn watch(self: Arc<Self>) {
        loop {
            let interval = self.shared.live().config.reload.watch_interval_s;
            if interval == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_secs(interval)).await;
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let path = self.path.clone();
            let files = seen.files.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || watch::on_disk(&path, &files)).await else { continue };
            if now != seen.fingerprint {
                let _ = self.reload("file watch").await;
            }
        }
    }

    /// The reload itself; the changed keys on success.
    async fn try_reload(&self) -> Result<Vec<String>, ConfigError> {
        let text = std::fs::read_to_string(&self.path);
        let parsed = match &text {
            Ok(text) => Config::from_text_with_env(text),
            Err(e) => Err(ConfigError::Load(format!("cannot read {}: {e}", self.path.display()))),
        };
        self.record(text.as_deref().map_err(std::io::Error::kind), parsed.as_ref().ok());
        let new = parsed?;
        let running = self.shared.live_full();
        let (effective, ignored) = restart::keep_running(&running.config, new);
        for key in &ignored {
            tracing::warn!(
                key,
                "changed in the configuration but needs a restart to take effect; the running value stays"
            );
        }
        let changed = changed_keys(&running.config, &effective);
        let live = Live::build(effective, Some(&running))?;
        live.ready().await?;
        if live.config.jwt.allowed_roles != running.config.jwt.allowed_roles {
            self.check_roles(&live.config).await?;
        }
        // Nothing below can fail: the new configuration is applied whole.
        let (old, new) = (&running.config, &live.config);
        if old.pool != new.pool || old.jwt.allowed_roles != new.jwt.allowed_roles {
            self.shared.pool.reconfigure(&new.pool, &new.jwt.allowed_roles);
        }
        if old.log.filter != new.log.filter
            && let Some(log) = &self.log
        {
            log.set_filter(&new.log.filter);
        }
        self.shared.replace_live(live);
        Ok(changed)
    }

    /// New `jwt.allowed_roles` pass the start-up check before they apply: the proxy's role must
    /// not inherit any of them. An unreachable upstream does not block the reload (as at
    /// start): every new connection runs the same check.
    async fn check_roles(&self, config: &Config) -> Result<(), ConfigError> {
        let database = config.upstream.database.as_deref().unwrap_or("postgres");
        match self.shared.pool.check_upstream_for(database, &config.jwt.allowed_roles).await {
            Ok(()) => Ok(()),
            Err(e @ UpstreamError::UnsafeRole(_)) => {
                Err(ConfigError::Invalid { key: "jwt.allowed_roles", reason: e.to_string() })
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream not reachable: jwt.allowed_roles checked by each new connection");
                Ok(())
            }
        }
    }

    /// Records what this attempt read, so the file watch fires again only on a further change.
    /// The files to watch are those of `parsed`, or the previous list when it did not parse.
    fn record(&self, text: Result<&str, std::io::ErrorKind>, parsed: Option<&Config>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = parsed {
            seen.files = config.reloadable_files().into_iter().map(Path::to_path_buf).collect();
        }
        seen.fingerprint = watch::fingerprint(text, &seen.files);
    }
}
