//! Logging set-up for `rlsproxy run`: text or JSON lines on stderr, filtered by `[log] filter`
//! unless `RUST_LOG` is set, with the filter behind a reload handle so that a configuration
//! reload changes the level without a restart (the format needs one).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{Config, LogFormat, parse_log_filter};

/// Changes the active log filter.
#[derive(Debug, Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start: it wins over `[log] filter`, at start and at every reload.
    from_env: bool,
}

impl LogHandle {
    /// Applies a reloaded `[log] filter` (validated with the configuration).
    pub fn set_filter(&self, filter: &str) {
        if self.from_env {
            tracing::info!("log.filter changed but RUST_LOG is set and wins; the filter stays");
            return;
        }
        let applied = parse_log_filter(filter).and_then(|f| self.filter.reload(f).map_err(|e| e.to_string()));
        match applied {
            Ok(()) => tracing::info!(filter, "log filter changed"),
            Err(e) => tracing::warn!(error = %e, "log filter not changed"),
        }
    }
}

/// Installs the global subscriber for `config`; call once.
pub fn init(config: &Config) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).map(|v| parse_log_filter(&v));
    let from_env = matches!(env, Some(Ok(_)));
    let (filter, env_error) = match env {
        Some(Ok(filter)) => (filter, None),
        other => {
            let filter = parse_log_filter(&config.log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
            (filter, other.and_then(Result::err))
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let output = match config.log.format {
        LogFormat::Json => output.json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Text => output.boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).init();
    if let Some(error) = env_error {
        tracing::warn!(%error, "RUST_LOG is not a valid filter and is ignored; [log] filter applies");
    }
    LogHandle { filter: handle, from_env }
}
