//! What a new server connection reads afresh, so that rotating it needs no restart (a
//! Kubernetes Secret updates its mounted files in place): the upstream password from
//! `upstream.password_file`, and the CA certificates of `upstream.sslrootcert`. A file that
//! cannot be read (or, for the CA, parsed) keeps what was read before: a rotation may
//! replace a file in two steps.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::config::{ConfigError, SslMode, UpstreamConfig};

/// The proxy's upstream password: given inline, or `upstream.password_file`, read again for
/// every new server connection.
pub(super) enum Password {
    Inline(Option<String>),
    File { path: PathBuf, last: Mutex<String> },
}

impl Password {
    pub(super) fn from_config(cfg: &UpstreamConfig) -> Result<Self, ConfigError> {
        let first = crate::config::read_secret("upstream.password_file", &cfg.password, &cfg.password_file)?;
        Ok(match (&cfg.password_file, first) {
            (Some(path), Some(first)) => Password::File { path: path.clone(), last: Mutex::new(first) },
            (_, inline) => Password::Inline(inline),
        })
    }

    pub(super) fn current(&self) -> Option<String> {
        let (path, last) = match self {
            Password::Inline(password) => return password.clone(),
            Password::File { path, last } => (path, last),
        };
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        match std::fs::read_to_string(path) {
            Ok(text) => text.trim_end_matches(['\r', '\n']).clone_into(&mut last),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "upstream.password_file cannot be read; logging in with the password read before"
            ),
        }
        Some(last.clone())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password itself.
        match self {
            Password::Inline(_) => f.write_str("Password::Inline"),
            Password::File { path, .. } => write!(f, "Password::File({})", path.display()),
        }
    }
}

/// The TLS configuration of new server connections, built again when `upstream.sslrootcert`
/// changes (its modification time), so that a rotated CA is trusted without a restart.
pub(super) struct TlsRoots {
    sslmode: SslMode,
    root: Option<PathBuf>,
    /// The file's modification time when `config` was built from it, and the configuration.
    current: Mutex<(Option<SystemTime>, Arc<rustls::ClientConfig>)>,
}

impl TlsRoots {
    /// `None` with `sslmode = disable`; an unreadable CA file is an error here, at start.
    pub(super) fn from_config(cfg: &UpstreamConfig) -> Result<Option<Self>, ConfigError> {
        let modified = cfg.sslrootcert.as_deref().and_then(modified);
        let Some(config) = crate::tls::upstream_config(cfg.sslmode, cfg.sslrootcert.as_deref())? else {
            return Ok(None);
        };
        let current = Mutex::new((modified, config));
        Ok(Some(Self { sslmode: cfg.sslmode, root: cfg.sslrootcert.clone(), current }))
    }

    /// The configuration for a connection opened now.
    pub(super) fn current(&self) -> Arc<rustls::ClientConfig> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(root) = &self.root else { return current.1.clone() };
        let now = modified(root);
        if now.is_some() && now != current.0 {
            match crate::tls::upstream_config(self.sslmode, Some(root)) {
                Ok(Some(config)) => {
                    tracing::info!(path = %root.display(), "upstream.sslrootcert changed; new connections trust it");
                    *current = (now, config);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    path = %root.display(),
                    error = %e,
                    "upstream.sslrootcert cannot be read; new connections trust the certificates read before"
                ),
            }
        }
        current.1.clone()
    }
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots").field("sslmode", &self.sslmode).field("root", &self.root).finish()
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
