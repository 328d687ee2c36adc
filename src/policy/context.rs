//! The tenant context injection (docs/security.md, "Injection"): one statement under a
//! reserved name, executed at every transaction start with the client's values as bind
//! parameters, so they never appear in SQL text, pg_stat_activity or the server log. In
//! strict mode a second one records the signed value's admission when a connection takes
//! a context. Both are prepared once per server connection, or, with `[context]
//! hide_injection`, parsed and closed around every execution (no client statement then
//! sees them in `pg_prepared_statements`; PostgreSQL parses and plans them each time).

use bytes::{Bytes, BytesMut};

use std::sync::Arc;
use std::time::Duration;

use super::strict::{self, Signer};
use crate::auth::TenantContext;
use crate::config::{Config, ConfigError};
use crate::protocol::{Kind, frontend};

/// Name of the injection statement on every server connection.
pub const STATEMENT_NAME: &str = "rlsproxy_ctx";

/// Name of strict mode's admission statement (migrations/0003_strict_mode.sql).
pub const ADMIT_STATEMENT_NAME: &str = "rlsproxy_admit";

/// Strict mode: how long a connection keeps a context's admission before taking the context
/// afresh. Statements check the admission against the current keys, so after a change of keys
/// they verify the slow way; this bounds how long, without an admission check per transaction.
pub const ADMISSION_REFRESH: Duration = Duration::from_secs(5);

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
    /// `[context] hide_injection`.
    hidden: bool,
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
    /// Close + Parse of the statements: for a connection where they may not exist (empty when
    /// hidden: nothing is kept prepared).
    pub prepare: Bytes,
    /// Bind + Execute with this client's values; when hidden, after a Close (of what a failed
    /// injection may have left) and a Parse, and before a Close. Also the identity of the
    /// context it sets.
    pub bind_execute: Bytes,
    /// The kinds of the messages of `bind_execute`, in order.
    pub kinds: &'static [Kind],
    /// The same values for a connection that takes this context afresh: in strict mode followed
    /// by the signed value's admission, recorded again whatever the session says (a client's
    /// `DISCARD` may have emptied what recorded it).
    pub adopt: Bytes,
    /// Strict mode: [`ADMISSION_REFRESH`], after which a connection takes the context afresh.
    pub refresh: Option<Duration>,
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
        let calls: Vec<String> =
            (0..pairs).map(|i| format!("pg_catalog.set_config(${}, ${}, false)", 2 * i + 1, 2 * i + 2)).collect();
        let mut spec = Self {
            sql: format!("SELECT {}", calls.join(", ")),
            tenant_setting: cfg.context.tenant_setting.clone(),
            claims_setting,
            sets_role,
            strict,
            clear: Bytes::new(),
            hidden: cfg.context.hide_injection,
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
            let exp = ctx.expires_at.unwrap_or_else(|| crate::auth::now_unix() + SIGNED_TTL_WITHOUT_EXP_S);
            signer.sign(&ctx.tenant, ctx.role.as_deref(), exp)
        });
        let values = self.values(&ctx.tenant, Some(&claims), ctx.role.as_deref(), signed.as_deref());
        let mut prepare = BytesMut::new();
        let mut bind_execute = BytesMut::new();
        self.run(&mut prepare, &mut bind_execute, STATEMENT_NAME, &self.sql, &values);
        let bind_execute = bind_execute.freeze();
        let mut adopt = BytesMut::from(&bind_execute[..]);
        if let Some(signed) = &signed {
            // Once per connection and context (and every ADMISSION_REFRESH): what spares strict
            // policies an HMAC per statement. Forced: the session's record may be gone.
            let sql = "SELECT rlsproxy.admit($1, true)";
            self.run(&mut prepare, &mut adopt, ADMIT_STATEMENT_NAME, sql, &[signed.as_str()]);
        }
        Injection {
            prepare: prepare.freeze(),
            bind_execute,
            kinds: match self.hidden {
                true => &[Kind::Close, Kind::Parse, Kind::Bind, Kind::Execute, Kind::Close],
                false => &[Kind::Bind, Kind::Execute],
            },
            adopt: adopt.freeze(),
            refresh: signed.is_some().then_some(ADMISSION_REFRESH),
            clear: self.clear.clone(),
        }
    }

    /// Appends the execution of statement `name` with `values` to `run`: Bind and Execute, with
    /// its Close and Parse in `prepare`, or, hidden, Close, Parse, Bind, Execute, Close in `run`.
    fn run(&self, prepare: &mut BytesMut, run: &mut BytesMut, name: &str, sql: &str, values: &[&str]) {
        let prepare = if self.hidden { &mut *run } else { prepare };
        frontend::close_statement(prepare, name);
        frontend::parse(prepare, name, sql);
        frontend::bind_text(run, name, values);
        frontend::execute(run);
        if self.hidden {
            frontend::close_statement(run, name);
        }
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
