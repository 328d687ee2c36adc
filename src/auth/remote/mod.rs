//! `jwt.jwks_url`: a key set fetched over HTTPS and kept fresh.
//!
//! - The first fetch happens before the proxy (or a reload that introduces the URL) starts
//!   using the set: [`RemoteJwks::prime`] fails with a configuration error otherwise.
//! - The set is cached for the server's max-age (`Cache-Control`, or `Expires`), clamped to
//!   `[jwks_min_refresh_s, jwks_max_age_s]`, and refreshed by a background task when 90 % of that
//!   has passed, so a token rarely waits for a fetch.
//! - A token whose `kid` is unknown triggers a refresh, at most one per `jwks_min_refresh_s`
//!   (successful or not): a burst of such tokens, or an attacker inventing `kid`s, costs the
//!   identity provider one request. The handshake waits for it, bounded by
//!   [`UNKNOWN_KID_WAIT`].
//! - A failed refresh keeps the last good set (and is logged as a warning); the background task
//!   tries again after `jwks_min_refresh_s`.

mod fetch;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::key::JwkSet;
use crate::config::{ConfigError, JwtConfig};
use fetch::{FETCH_TIMEOUT, FetchError, Fetched, Fetcher};

/// Longest a handshake waits for the refresh its unknown `kid` triggered: a little more than
/// one fetch may take, so that the fetch's own timeout, not this one, ends a slow fetch.
pub(crate) const UNKNOWN_KID_WAIT: Duration = FETCH_TIMEOUT.saturating_add(Duration::from_secs(1));

/// What identifies a remote key set: a reload with the same spec keeps the cached set (and its
/// refresher) instead of fetching again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteSpec {
    url: String,
    /// `jwt.jwks_ca_file` and its contents (a rotated CA makes a new spec).
    ca: Option<(PathBuf, Vec<u8>)>,
    min_refresh: Duration,
    max_age: Duration,
}

impl RemoteSpec {
    /// The spec `[jwt]` describes, `None` without `jwks_url`; reads `jwks_ca_file`.
    pub(crate) fn from_config(cfg: &JwtConfig) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &cfg.jwks_url else { return Ok(None) };
        let ca = match &cfg.jwks_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ConfigError::File {
                    key: "jwt.jwks_ca_file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some((path.clone(), pem))
            }
        };
        Ok(Some(Self {
            url: url.clone(),
            ca,
            min_refresh: Duration::from_secs(cfg.jwks_min_refresh_s),
            max_age: Duration::from_secs(cfg.jwks_max_age_s),
        }))
    }
}

/// When fetches happen; behind an async mutex that also serialises them.
#[derive(Debug, Default)]
struct Schedule {
    /// Start of the last fetch, successful or not: the unknown-`kid` rate limit.
    last_attempt: Option<Instant>,
    /// When the background task fetches next.
    refresh_at: Option<Instant>,
}

/// A key set fetched from `jwt.jwks_url`, shared by every [`super::Verifier`] built with the
/// same [`RemoteSpec`].
pub(crate) struct RemoteJwks {
    spec: RemoteSpec,
    fetcher: Fetcher,
    /// The last good set; empty until the first fetch (a fetched set is never empty).
    keys: ArcSwap<JwkSet>,
    schedule: tokio::sync::Mutex<Schedule>,
    /// The background refresher; aborted when the set is dropped (a reload that changed the
    /// URL, or the end of the process).
    refresher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks").field("url", &self.spec.url).field("keys", &self.keys.load().len()).finish()
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl RemoteJwks {
    /// Prepares the fetcher; nothing is fetched until [`RemoteJwks::prime`].
    pub(crate) fn new(spec: RemoteSpec) -> Result<Arc<Self>, ConfigError> {
        let ca = spec.ca.as_ref().map(|(path, pem)| (path.as_path(), pem.as_slice()));
        let fetcher = Fetcher::new(&spec.url, ca)?;
        Ok(Arc::new(Self {
            spec,
            fetcher,
            keys: ArcSwap::from_pointee(Vec::new()),
            schedule: tokio::sync::Mutex::default(),
            refresher: std::sync::Mutex::new(None),
        }))
    }

    /// What this set was built from.
    pub(crate) fn spec(&self) -> &RemoteSpec {
        &self.spec
    }

    /// The current key set (empty before the first fetch).
    pub(crate) fn keys(&self) -> Arc<JwkSet> {
        self.keys.load_full()
    }

    /// The first fetch, then the background refresher; a no-op once done. An error names
    /// `jwt.jwks_url`: the proxy does not start (or the reload is refused) without a key set.
    pub(crate) async fn prime(self: &Arc<Self>) -> Result<(), ConfigError> {
        let mut schedule = self.schedule.lock().await;
        if !self.keys.load().is_empty() {
            return Ok(());
        }
        self.fetch(&mut schedule).await.map_err(|e| ConfigError::Invalid {
            key: "jwt.jwks_url",
            reason: format!("{}: the first fetch failed: {e}", self.spec.url),
        })?;
        let task = tokio::spawn(refresh_in_background(Arc::downgrade(self)));
        *self.refresher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(())
    }

    /// Called for a token whose `kid` is not in the set: fetches again unless a fetch started
    /// less than `jwks_min_refresh_s` ago, waiting at most [`UNKNOWN_KID_WAIT`]. `true` when the
    /// set may have changed since the caller looked (it should verify again).
    pub(crate) async fn refresh_for_unknown_kid(&self) -> bool {
        let asked = Instant::now();
        let refresh = async {
            let mut schedule = self.schedule.lock().await;
            match schedule.last_attempt {
                // Another handshake's fetch ran while this one waited for the lock.
                Some(last) if last >= asked => return true,
                Some(last) if asked.duration_since(last) < self.spec.min_refresh => {
                    tracing::debug!(url = self.spec.url, "unknown kid: JWKS refresh rate-limited");
                    return false;
                }
                _ => {}
            }
            tracing::info!(url = self.spec.url, "unknown kid: refreshing the JWKS");
            self.fetch(&mut schedule).await.is_ok()
        };
        tokio::time::timeout(UNKNOWN_KID_WAIT, refresh).await.unwrap_or(false)
    }

    /// One fetch; on success the set is replaced and the next background refresh scheduled at
    /// 90 % of its clamped lifetime; on failure the old set stays and the next try is
    /// `jwks_min_refresh_s` away.
    async fn fetch(&self, schedule: &mut Schedule) -> Result<(), FetchError> {
        let started = Instant::now();
        schedule.last_attempt = Some(started);
        match self.fetcher.fetch().await {
            Ok(Fetched { keys, max_age }) => {
                let lifetime = max_age.unwrap_or(self.spec.max_age).clamp(self.spec.min_refresh, self.spec.max_age);
                schedule.refresh_at = Some(started + lifetime.mul_f64(0.9));
                let kids: Vec<&str> = keys.iter().filter_map(|(kid, _)| kid.as_deref()).collect();
                let changed = {
                    let old = self.keys.load();
                    old.len() != keys.len() || old.iter().zip(keys.iter()).any(|(a, b)| a.0 != b.0)
                };
                if changed {
                    tracing::info!(url = self.spec.url, kids = ?kids, lifetime_s = lifetime.as_secs(), "JWKS fetched");
                } else {
                    tracing::debug!(url = self.spec.url, lifetime_s = lifetime.as_secs(), "JWKS fetched, same key ids");
                }
                self.keys.store(Arc::new(keys));
                Ok(())
            }
            Err(e) => {
                schedule.refresh_at = Some(started + self.spec.min_refresh);
                let kept = self.keys.load().len();
                tracing::warn!(url = self.spec.url, error = %e, kept_keys = kept, "JWKS fetch failed; the last good key set stays in use");
                Err(e)
            }
        }
    }
}

/// Refreshes the set when its schedule says so, until the set is dropped.
async fn refresh_in_background(set: Weak<RemoteJwks>) {
    loop {
        let Some(due) = set.upgrade().and_then(|s| s.schedule.try_lock().ok().and_then(|s| s.refresh_at)) else {
            // Busy (a fetch is running) or gone: look again shortly, or end.
            if set.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        tokio::time::sleep_until(due).await;
        let Some(this) = set.upgrade() else { return };
        let mut schedule = this.schedule.lock().await;
        // An unknown-kid refresh may have moved the schedule meanwhile.
        if schedule.refresh_at.is_some_and(|at| at <= Instant::now()) {
            let _ = this.fetch(&mut schedule).await;
        }
    }
}
