//! [`Live`]: the part of the proxy's state a reload replaces, built whole from one
//! configuration and swapped in as one value (see `shared::Shared::live`), so that no
//! connection ever sees half of an old configuration and half of a new one.

use std::sync::Arc;

use crate::auth::Verifier;
use crate::config::{Config, ConfigError};
use crate::policy::guard::Guard;

/// The reloadable components, and the configuration they were built from.
#[derive(Debug)]
pub struct Live {
    /// The configuration in force: the file's values for every reloadable key, the values the
    /// process started with for the keys that need a restart (see `restart`). Reading a
    /// restart-only key here is therefore always the running value.
    pub config: Config,
    /// Token verification: read once per new connection (open sessions were verified already).
    pub verifier: Verifier,
    /// The statement guard: read on every Query, Parse and FunctionCall, by open sessions too,
    /// so that a newly forbidden object is forbidden everywhere at once. An `Arc`, so that a
    /// reload that leaves `[guard]` alone keeps the guard and its verdict cache.
    pub guard: Arc<Guard>,
    /// TLS offered to clients (`listen.tls_cert_file`/`tls_key_file`, reread at each reload so a
    /// renewed certificate is served to new connections).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Bearer token of `/admin/*`.
    pub admin_token: Option<String>,
}

impl Live {
    /// Builds every component `config` describes, reading every file it names; parts whose
    /// configuration equals `previous`'s are kept (the guard and its cache, a `jwks_url` key
    /// set and its refresher). Fetches nothing: call [`Live::ready`] before using it.
    pub fn build(config: Config, previous: Option<&Live>) -> Result<Self, ConfigError> {
        let verifier = Verifier::build(&config.jwt, previous.map(|p| &p.verifier))?;
        let guard = match previous {
            Some(p) if p.config.guard == config.guard && p.config.context == config.context => p.guard.clone(),
            _ => Arc::new(Guard::from_config(&config)),
        };
        let client_tls = match (&config.listen.tls_cert_file, &config.listen.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let admin_token = config.admin.bearer_token()?;
        Ok(Self { config, verifier, guard, client_tls, admin_token })
    }

    /// What needs the network: the first fetch of a new `jwt.jwks_url`. An error names the key,
    /// and the components must not be used.
    pub async fn ready(&self) -> Result<(), ConfigError> {
        self.verifier.ready().await
    }
}
