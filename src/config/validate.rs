//! Checks that need more than serde: combinations of keys, names, ranges.

use std::path::PathBuf;

use super::{Config, SslMode};

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// A value is present but unusable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `jwt.secret_file`.
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A file named by a key cannot be used.
    #[error("{key}: {path}: {reason}")]
    File {
        /// Dotted key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// A setting name the server accepts for a custom GUC: `prefix.name`, identifier characters only.
fn is_custom_setting_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    matches!((parts.next(), parts.next()), (Some(a), Some(b)) if ok_part(a) && ok_part(b)) && parts.all(ok_part)
}

impl Config {
    /// Checks the combinations serde cannot; file contents are checked by their users.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.listen.tls_cert_file, &self.listen.tls_key_file) {
            (Some(_), None) => return Err(invalid("listen.tls_key_file", "required with tls_cert_file")),
            (None, Some(_)) => return Err(invalid("listen.tls_cert_file", "required with tls_key_file")),
            _ => {}
        }
        if self.listen.require_tls == super::RequireTls::Always && self.listen.tls_cert_file.is_none() {
            return Err(invalid("listen.require_tls", "\"always\" needs listen.tls_cert_file and listen.tls_key_file"));
        }
        if self.upstream.host.is_empty() {
            return Err(invalid("upstream.host", "must not be empty"));
        }
        if self.upstream.user.is_empty() {
            return Err(invalid("upstream.user", "must not be empty"));
        }
        if self.upstream.search_path.to_ascii_lowercase().contains("$user") {
            return Err(invalid(
                "upstream.search_path",
                "must not contain \"$user\": it names a schema after the proxy's role, which a tenant sharing \
                 that role could create; name the schemas themselves",
            ));
        }
        if self.upstream.search_path.contains('\0') {
            return Err(invalid("upstream.search_path", "must not contain a NUL byte"));
        }
        if self.upstream.password.is_some() && self.upstream.password_file.is_some() {
            return Err(invalid("upstream.password_file", "set either password or password_file"));
        }
        if matches!(self.upstream.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
            && self.upstream.sslrootcert.is_none()
        {
            return Err(invalid("upstream.sslrootcert", "required with sslmode verify-ca or verify-full"));
        }
        if self.pool.size == 0 {
            return Err(invalid("pool.size", "must be at least 1"));
        }
        if self.pool.min_idle > self.pool.size {
            return Err(invalid("pool.min_idle", "must not exceed pool.size"));
        }
        if self.pool.min_idle > 0 && self.upstream.database.is_none() {
            return Err(invalid("pool.min_idle", "needs upstream.database: warm connections need a database"));
        }
        if self.pool.max_prepared_statements == 0 {
            return Err(invalid("pool.max_prepared_statements", "must be at least 1"));
        }
        if self.jwt.algorithms.is_empty() {
            return Err(invalid("jwt.algorithms", "list at least one algorithm"));
        }
        self.validate_jwks()?;
        if self.jwt.tenant_claim.is_empty() {
            return Err(invalid("jwt.tenant_claim", "must not be empty"));
        }
        if self.jwt.role_claim.is_empty() && !self.jwt.allowed_roles.is_empty() {
            return Err(invalid("jwt.allowed_roles", "set jwt.role_claim too, or leave this empty"));
        }
        if !self.jwt.role_claim.is_empty() && self.jwt.allowed_roles.is_empty() {
            return Err(invalid("jwt.allowed_roles", "list the roles a token may select with jwt.role_claim"));
        }
        if !is_custom_setting_name(&self.context.tenant_setting) {
            return Err(invalid("context.tenant_setting", "must be a custom setting name such as app.current_tenant"));
        }
        if !self.context.claims_setting.is_empty() && !is_custom_setting_name(&self.context.claims_setting) {
            return Err(invalid("context.claims_setting", "must be a custom setting name such as request.jwt.claims"));
        }
        for name in &self.guard.operator_allows {
            if !crate::policy::guard::rule::Rule::ALL.iter().any(|r| r.name() == name) {
                return Err(invalid("guard.operator_allows", format!("unknown rule \"{name}\"")));
            }
            if crate::policy::guard::rule::Rule::ALL.iter().any(|r| r.name() == name && r.never_exempt()) {
                return Err(invalid(
                    "guard.operator_allows",
                    format!(
                        "\"{name}\" cannot be allowed: it keeps a token from changing its own tenant or from bypassing the guard"
                    ),
                ));
            }
        }
        if self.guard.max_statement_bytes == 0 {
            return Err(invalid("guard.max_statement_bytes", "must be at least 1"));
        }
        if self.context.strict {
            if !crate::policy::strict::is_valid_kid(&self.context.strict_kid) {
                return Err(invalid("context.strict_kid", "required with strict: letters, digits, '_' or '-'"));
            }
            if self.context.strict_key.is_none() && self.context.strict_key_file.is_none() {
                return Err(invalid("context.strict_key", "required with strict (or context.strict_key_file)"));
            }
        }
        if self.doctor.tenant_column.is_empty() || self.doctor.tenant_column.len() > 63 {
            // 63 bytes: PostgreSQL's identifier limit (a column can have no longer name).
            return Err(invalid("doctor.tenant_column", "must be a column name of 1 to 63 bytes"));
        }
        if self.doctor.schemas.iter().any(String::is_empty) {
            return Err(invalid("doctor.schemas", "schema names must not be empty"));
        }
        if let Err(e) = super::parse_log_filter(&self.log.filter) {
            return Err(invalid(
                "log.filter",
                format!("not a valid filter ({e}); e.g. \"info\" or \"info,rlsproxy=debug\""),
            ));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(invalid("limits.max_message_bytes", "must be at least 1024"));
        }
        if self.limits.max_buffered_bytes < self.limits.max_message_bytes {
            return Err(invalid("limits.max_buffered_bytes", "must be at least limits.max_message_bytes"));
        }
        if self.tcp.keepalive_idle_s > 0 && (self.tcp.keepalive_interval_s == 0 || self.tcp.keepalive_count == 0) {
            return Err(invalid("tcp.keepalive_interval_s", "keepalive needs an interval and a count of at least 1"));
        }
        match (&self.upstream.database, self.upstream.allowed_databases.is_empty()) {
            (None, true) => Err(invalid(
                "upstream.allowed_databases",
                "list the databases clients may use, or set upstream.database",
            )),
            (Some(_), false) => Err(invalid("upstream.allowed_databases", "only with upstream.database unset")),
            _ => Ok(()),
        }
    }
}

impl Config {
    /// `jwt.jwks_url` and its companions; the URL is only parsed here, fetched at start.
    fn validate_jwks(&self) -> Result<(), ConfigError> {
        let jwt = &self.jwt;
        if let Some(url) = &jwt.jwks_url {
            jwks_url_problem(url).map_or(Ok(()), |why| Err(invalid("jwt.jwks_url", why)))?;
            if jwt.jwks_file.is_some() {
                return Err(invalid("jwt.jwks_url", "set either jwks_url or jwks_file, not both"));
            }
        } else if jwt.jwks_ca_file.is_some() {
            return Err(invalid("jwt.jwks_ca_file", "only used with jwt.jwks_url"));
        }
        if jwt.jwks_min_refresh_s == 0 {
            return Err(invalid("jwt.jwks_min_refresh_s", "must be at least 1"));
        }
        if jwt.jwks_max_age_s < jwt.jwks_min_refresh_s {
            return Err(invalid("jwt.jwks_max_age_s", "must not be below jwt.jwks_min_refresh_s"));
        }
        Ok(())
    }
}

/// Why `url` cannot be a JWKS address: it must be `https://host[:port]/path`, without
/// credentials (they would end up in log lines that name the URL).
pub(crate) fn jwks_url_problem(url: &str) -> Option<String> {
    let uri: hyper::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return Some(format!("not a URL ({e})")),
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Some("plain http:// is refused: the key set decides who is which tenant; use https://".into());
        }
        _ => return Some("must be an https:// URL".into()),
    }
    match uri.authority() {
        None => Some("has no host".into()),
        Some(a) if a.as_str().contains('@') => Some("must not carry credentials".into()),
        Some(a) if a.host().is_empty() => Some("has no host".into()),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_setting_names() {
        assert!(is_custom_setting_name("app.current_tenant"));
        assert!(is_custom_setting_name("request.jwt.claims"));
        assert!(!is_custom_setting_name("search_path"));
        assert!(!is_custom_setting_name("app."));
        assert!(!is_custom_setting_name("app.x'; drop"));
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        // The defaults, once the database clients may use is chosen.
        let mut config = Config::default();
        let unchosen = config.validate().err().map(|e| e.to_string());
        let expected = "upstream.allowed_databases: list the databases clients may use, or set upstream.database";
        assert_eq!(unchosen.as_deref(), Some(expected));
        config.upstream.allowed_databases = vec!["app".into(), "reports".into()];
        assert!(config.validate().is_ok());
        config.upstream.database = Some("app".into());
        let both = config.validate().err().map(|e| e.to_string());
        assert_eq!(both.as_deref(), Some("upstream.allowed_databases: only with upstream.database unset"));
        config.upstream.allowed_databases.clear();
        assert!(config.validate().is_ok());
        let err = Config::from_toml("[pool]\nsize = 0\n").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("pool.size: must be at least 1"));
        let err = Config::from_toml("[upstream]\nsslmode = \"verify-full\"\n").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("upstream.sslrootcert: required with sslmode verify-ca or verify-full"));
        let err = Config::from_toml("[upstream]\nsearch_path = '\"$user\", public'\n").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("upstream.search_path: must not contain \"$user\"")));
        assert!(Config::from_toml("[upstream]\ndatabase = \"app\"\nsearch_path = 'app, public'\n").is_ok());
        // A budget that a single largest message would not fit, and keepalive without probes.
        let db = "[upstream]\ndatabase = \"app\"\n";
        let err = Config::from_toml(&format!(
            "{db}[limits]\nmax_message_bytes = \"8 MiB\"\nmax_buffered_bytes = \"4 MiB\"\n"
        ))
        .err()
        .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("limits.max_buffered_bytes: must be at least limits.max_message_bytes"));
        let err = Config::from_toml(&format!("{db}[tcp]\nkeepalive_idle_s = 5\nkeepalive_count = 0\n"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("tcp.keepalive_interval_s: keepalive needs an interval and a count of at least 1")
        );
        assert!(Config::from_toml(&format!("{db}[tcp]\nkeepalive_idle_s = 0\nkeepalive_count = 0\n")).is_ok());
    }

    #[test]
    fn jwks_urls_must_be_https_without_credentials() {
        assert_eq!(jwks_url_problem("https://auth.example.com/.well-known/jwks.json"), None);
        assert_eq!(jwks_url_problem("https://127.0.0.1:8443/jwks"), None);
        let plain = jwks_url_problem("http://auth.example.com/jwks").unwrap_or_default();
        assert!(plain.starts_with("plain http:// is refused"), "{plain}");
        assert_eq!(jwks_url_problem("ftp://x/jwks").as_deref(), Some("must be an https:// URL"));
        assert_eq!(jwks_url_problem("/jwks.json").as_deref(), Some("must be an https:// URL"));
        assert_eq!(jwks_url_problem("https://u:p@x/jwks").as_deref(), Some("must not carry credentials"));
        let err =
            Config::from_toml("[jwt]\nsecret = \"s\"\njwks_url = \"http://x/jwks\"\n").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("jwt.jwks_url: plain http:// is refused")));
        let err = Config::from_toml("[log]\nfilter = \"info,=x=y\"\n").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("log.filter: not a valid filter")));
        let err = Config::from_toml("[log]\nfilter = \" \"\n").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "log.filter: not a valid filter (empty; \"off\" logs nothing); e.g. \"info\" or \"info,rlsproxy=debug\""
            )
        );
        let long = format!("[doctor]\ntenant_column = \"{}\"\n", "c".repeat(64));
        let err = Config::from_toml(&long).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("doctor.tenant_column: must be a column name of 1 to 63 bytes"));
    }
}
