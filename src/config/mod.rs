//! Typed configuration: one struct loaded from a TOML file, then overridden by
//! `RLSPROXY__SECTION__KEY` environment variables, then validated so that a
//! mistake is reported at start with the name of the key that is wrong.

mod admin;
mod log_filter;
mod sections;
mod size;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use admin::AdminConfig;
pub use log_filter::parse_log_filter;
pub use sections::*;
pub use validate::ConfigError;

/// The whole configuration of one proxy process.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener.
    pub listen: ListenConfig,
    /// The real PostgreSQL server.
    pub upstream: UpstreamConfig,
    /// Upstream connection pooling.
    pub pool: PoolConfig,
    /// Token verification.
    pub jwt: JwtConfig,
    /// What is injected at every transaction start.
    pub context: ContextConfig,
    /// Logging.
    pub log: LogConfig,
    /// Limits that protect the proxy from oversized or slow input.
    pub limits: LimitsConfig,
    /// Dead-peer detection on client and server sockets.
    pub tcp: TcpConfig,
    /// The statement guard.
    pub guard: GuardConfig,
    /// The RLS audit (`rlsproxy doctor`).
    pub doctor: DoctorConfig,
    /// Probes, metrics and admin views over HTTP.
    pub admin: AdminConfig,
    /// Live reload (SIGHUP, file watch).
    pub reload: ReloadConfig,
}

impl Config {
    /// Loads `path` (TOML), applies `RLSPROXY__SECTION__KEY` overrides, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_text(path).map(|(cfg, _)| cfg)
    }

    /// As [`Config::load`], also returning the file's text as read: the reloader fingerprints
    /// exactly the bytes the running configuration came from.
    pub fn load_with_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Load(format!("cannot read {}: {e}", path.display())))?;
        Self::from_text_with_env(&text).map(|cfg| (cfg, text))
    }

    /// Parses a configuration file's TOML `text`, applies `RLSPROXY__SECTION__KEY` overrides,
    /// and validates: what [`Config::load`] does after reading the file.
    pub fn from_text_with_env(text: &str) -> Result<Self, ConfigError> {
        let raw = env_overrides(
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)),
        )?
        .build()
        .map_err(load_error)?;
        let cfg: Config = raw.try_deserialize().map_err(load_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Files this configuration names whose contents a reload reads again (secrets, keys,
    /// JWKS, TLS): what the file watch checks besides the configuration file itself. Files of
    /// settings that need a restart (`context.strict_key_file`) are left out: rereading them
    /// would change nothing; `upstream.password_file` and `upstream.sslrootcert` are read again
    /// by every new server connection instead.
    pub fn reloadable_files(&self) -> Vec<&Path> {
        [
            &self.jwt.secret_file,
            &self.jwt.public_key_file,
            &self.jwt.jwks_file,
            &self.jwt.jwks_ca_file,
            &self.admin.token_file,
            &self.listen.tls_cert_file,
            &self.listen.tls_key_file,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect()
    }

    /// Parses TOML text without environment overrides (tests, examples).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(load_error)?;
        let cfg: Config = raw.try_deserialize().map_err(load_error)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads a secret given inline or as a file; the file's trailing newline is dropped.
pub fn read_secret(
    key: &'static str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            Err(ConfigError::Invalid { key, reason: "set either the value or the _file variant, not both".into() })
        }
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                key,
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "upstream.allowed_databases",
    "jwt.algorithms",
    "jwt.allowed_roles",
    "guard.protected_prefixes",
    "guard.sql_functions",
    "guard.forbidden_objects",
    "guard.operator_roles",
    "guard.operator_allows",
    "doctor.schemas",
];

/// `RLSPROXY__SECTION__KEY` variables as overrides of `section.key`. Values stay text (a
/// secret or password `007` must not become `7`; numbers and booleans are read from the
/// text where the key is one); list keys split at commas.
fn env_overrides(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else { continue };
        let Some(key) = name.strip_prefix("RLSPROXY__") else { continue };
        let key = key.to_lowercase().replace("__", ".");
        builder = if LIST_KEYS.contains(&key.as_str()) {
            let items: Vec<String> = value.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            builder.set_override(&key, items)
        } else {
            builder.set_override(&key, value)
        }
        .map_err(load_error)?;
    }
    Ok(builder)
}

/// A loading error without the source excerpt the TOML parser adds: that excerpt quotes the
/// line, which may hold a secret (a `secret = "…` missing its closing quote).
fn load_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains('|')).map(str::trim).filter(|l| !l.is_empty()).collect();
    ConfigError::Load(kept.join(": "))
}
