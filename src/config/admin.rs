//! `[admin]`: the HTTP listener for probes, metrics and the admin views.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `/healthz`, `/readyz`, `/metrics` and `/admin/*` are served; unset: no listener.
    /// Never the client port: probes and scrapes need no token, clients do.
    pub address: Option<SocketAddr>,
    /// Bearer token for `/admin/*`; without one (or `token_file`) those paths answer 403.
    pub token: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Tenants that get a `tenant` label of their own in the per-tenant metrics (the first ones
    /// seen); the others are counted under `other`, so a tenant count cannot blow up the series.
    pub tenant_label_limit: usize,
}

impl AdminConfig {
    /// The bearer token `/admin/*` requires, if one is configured.
    pub fn bearer_token(&self) -> Result<Option<String>, super::ConfigError> {
        let token = super::read_secret("admin.token_file", &self.token, &self.token_file)?;
        Ok(token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { address: None, token: None, token_file: None, tenant_label_limit: 100 }
    }
}
