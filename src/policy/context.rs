//! The tenant context injection (README "Security model in brief"): one statement prepared
//! once per server connection under a reserved name, executed at every
//! transaction start with the client's values as bind parameters, so they never
//! appear in SQL text, pg_stat_activity or the server log.

use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use super::strict::{self, Signer};
use crate::auth::TenantContext;
use crate::config::{Config, ConfigError};
use crate::protocol::frontend;

/// Name of the injection statement on every server connection.
pub const STATEMENT_NAME: &str = "rlsproxy_ctx";

/// Which settings are injected, in order; fixed for the life of the process.
#[derive(Clone)]
pub struct ContextSpec {
    sql: String,
    tenant_setting: String,
    claims_setting: Option<String>,
    sets_role: bool,
    /// Strict mode: the setting that receives the signed value, and the signer.
    strict: Option<(String, Arc<Signer>)>,
    /// The Query message of [`Injection::clear`].
    clear: Bytes,
}

impl std::fmt::Debug for ContextSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signer holds the HMAC key: never printed.
        f.debug_struct("ContextSpec").field("sql", &self.sql).field("strict", &self.strict.is_some()).finish()
    }
}

/// How long a signed value stays valid when the token has no `exp`.
const SIGNED_TTL_WITHOUT_EXP_S: u64 = 3600;

/// The messages that inject one client's context.
#[derive(Debug, Clone)]
pub struct Injection {
    /// Close + Parse of the statement: for a connection where it may not exist.
    pub prepare: Bytes,
    /// Bind + Execute with this client's values; also the identity of the context it sets.
    pub bind_execute: Bytes,
    /// The same values for a connection that takes this context afresh: in strict mode the
    /// signed value's admission is recorded again whatever the session says (a client's
    /// `DISCARD` may have emptied what recorded it). Otherwise the same as `bind_execute`.
    pub adopt: Bytes,
    /// A simple Query that empties every injected setting (tenant `''`, role `none`): what a
    /// connection is left with when the client's own injection then fails, so that policies
    /// fail closed instead of seeing a previous context. Plain SQL (the values are constants),
    /// so it needs no statement prepared afresh, which in strict mode costs more to plan than
    /// the rest of a short transaction.
    pub clear: Bytes,
}

impl ContextSpec {
    /// Builds the statement from `[context]` and `[jwt] role_claim`; reads the strict-mode key.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let claims_setting = Some(cfg.context.claims_setting.clone()).filter(|s| !s.is_empty());
        let sets_role = !cfg.jwt.role_claim.is_empty();
        let strict = match cfg.context.strict {
            false => None,
            true => {
                let key = crate::config::read_secret(
                    "context.strict_key_file",
                    &cfg.context.strict_key,
                    &cfg.context.strict_key_file,
                )?
                .and_then(|hex| strict::key_from_hex(hex.trim()))
                .filter(|key| key.len() >= strict::MIN_KEY_LEN)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "context.strict_key",
                    reason: format!("must be hex for at least {} bytes", strict::MIN_KEY_LEN),
                })?;
                Some((strict::DEFAULT_SETTING.to_string(), Arc::new(Signer::new(&cfg.context.strict_kid, &key))))
            }
        };
        let pairs = 1 + usize::from(claims_setting.is_some()) + usize::from(sets_role) + usize::from(strict.is_some());
        // Schema-qualified: a client may create a `set_config(text, text, boolean)` of its own
        // and put its schema before pg_catalog in search_path; the plan of this statement is
        // re-resolved when search_path changes, so an unqualified name could then run the
        // client's function with every later client's values.
        let mut calls: Vec<String> =
            (0..pairs).map(|i| format!("pg_catalog.set_config(${}, ${}, false)", 2 * i + 1, 2 * i + 2)).collect();
        if strict.is_some() {
            // The signed value is the last pair's; admitting it once per server connection is
            // what spares strict policies an HMAC per statement (migrations/0003_strict_mode.sql).
            calls.push(format!("rlsproxy.admit(${}, ${})", 2 * pairs, 2 * pairs + 1));
        }
        let mut spec = Self {
            sql: format!("SELECT {}", calls.join(", ")),
            tenant_setting: cfg.context.tenant_setting.clone(),
            claims_setting,
            sets_role,
            strict,
            clear: Bytes::new(),
        };
        let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let clears: Vec<String> = spec
            .values("", None, None, None)
            .chunks(2)
            .map(|pair| format!("pg_catalog.set_config({}, {}, false)", literal(pair[0]), literal(pair[1])))
            .collect();
        let mut clear = BytesMut::new();
        frontend::query(&mut clear, &format!("SELECT {}", clears.join(", ")));
        spec.clear = clear.freeze();
        Ok(spec)
    }

    /// The injection for `ctx`.
    pub fn injection(&self, ctx: &TenantContext) -> Injection {
        let claims = ctx.claims.to_string();
        let signed = self.strict.as_ref().map(|(_, signer)| {
            let exp = ctx.expires_at.unwrap_or_else(|| crate::session::now_unix() + SIGNED_TTL_WITHOUT_EXP_S);
            signer.sign(&ctx.tenant, ctx.role.as_deref(), exp)
        });
        let mut prepare = BytesMut::new();
        frontend::close_statement(&mut prepare, STATEMENT_NAME);
        frontend::parse(&mut prepare, STATEMENT_NAME, &self.sql);
        let values =
            |adopt| self.bind_execute(&ctx.tenant, Some(&claims), ctx.role.as_deref(), signed.as_deref(), adopt);
        Injection {
            prepare: prepare.freeze(),
            bind_execute: values(false),
            adopt: values(true),
            clear: self.clear.clone(),
        }
    }

    fn bind_execute(
        &self,
        tenant: &str,
        claims: Option<&str>,
        role: Option<&str>,
        signed: Option<&str>,
        adopt: bool,
    ) -> Bytes {
        let mut values = self.values(tenant, claims, role, signed);
        if self.strict.is_some() {
            values.push(if adopt { "t" } else { "f" });
        }
        let mut buf = BytesMut::new();
        frontend::bind_text(&mut buf, STATEMENT_NAME, &values);
        frontend::execute(&mut buf);
        buf.freeze()
    }

    /// Setting names and values, in pairs, as the statement's parameters take them.
    fn values<'a>(
        &'a self,
        tenant: &'a str,
        claims: Option<&'a str>,
        role: Option<&'a str>,
        signed: Option<&'a str>,
    ) -> Vec<&'a str> {
        let mut values: Vec<&str> = vec![&self.tenant_setting, tenant];
        if let Some(name) = &self.claims_setting {
            values.extend([name.as_str(), claims.unwrap_or("")]);
        }
        if self.sets_role {
            // `none` is SET ROLE NONE: back to the proxy's own role when the token names no role.
            values.extend(["role", role.unwrap_or("none")]);
        }
        if let Some((name, _)) = &self.strict {
            values.extend([name.as_str(), signed.unwrap_or("")]);
        }
        values
    }

    /// The SQL of the injection statement (for logs and docs).
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_config_per_setting_with_bind_parameters() {
        let mut cfg = Config::default();
        assert_eq!(ContextSpec::from_config(&cfg).expect("spec").sql(), "SELECT pg_catalog.set_config($1, $2, false)");
        cfg.context.claims_setting = "request.jwt.claims".into();
        cfg.jwt.role_claim = "role".into();
        assert_eq!(
            ContextSpec::from_config(&cfg).expect("spec").sql(),
            "SELECT pg_catalog.set_config($1, $2, false), pg_catalog.set_config($3, $4, false), \
             pg_catalog.set_config($5, $6, false)"
        );
    }

    #[test]
    fn the_clear_is_plain_sql_with_every_setting_emptied() {
        let mut cfg = Config::default();
        cfg.context.claims_setting = "request.jwt.claims".into();
        cfg.jwt.role_claim = "role".into();
        cfg.context.tenant_setting = "app.o'tenant".into();
        let spec = ContextSpec::from_config(&cfg).expect("spec");
        let clear = &spec.clear;
        assert_eq!((clear[0], clear.last()), (b'Q', Some(&0)));
        assert_eq!(
            std::str::from_utf8(&clear[5..clear.len() - 1]).expect("UTF-8"),
            "SELECT pg_catalog.set_config('app.o''tenant', '', false), \
             pg_catalog.set_config('request.jwt.claims', '', false), pg_catalog.set_config('role', 'none', false)"
        );
    }
}
