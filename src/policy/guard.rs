//! The statement guard (docs/security.md, "Statement guard"): every Query and Parse is parsed
//! with PostgreSQL's own parser (libpg_query) and refused when it could change
//! the tenant context or run SQL the guard cannot see (the walk: `inspect`).
//! Verdicts are cached under a hash of the statement text with numeric literals
//! collapsed (see `key` and `cache`), so each statement shape is parsed once. A
//! statement the parser cannot parse is refused, never forwarded, with PostgreSQL's own
//! syntax error (`syntax`); one longer than
//! `[guard] max_statement_bytes` is refused without being parsed.

mod cache;
mod inspect;
mod key;
pub mod rule;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

pub use inspect::encoding_is_safe;
pub use rule::{Refusal, Rule, Violation};

use crate::config::{Config, GuardConfig};

/// Texts at least this long are checked on a blocking thread: parsing them takes long
/// enough to hold up the other sessions of a relay thread.
const BLOCKING_BYTES: usize = 64 << 10;
/// Long texts parsed at once, at most: a parse tree takes a few hundred times the text's
/// size in memory, so many at once must wait instead of adding up.
const LONG_CHECKS_AT_ONCE: usize = 2;

/// Large-object functions (by their fixed OIDs in pg_proc) that libpq's fast-path API calls:
/// the only FunctionCall targets allowed, and only with `[guard] allow_large_objects`.
const LARGE_OBJECT_OIDS: &[u32] =
    &[715, 764, 765, 767, 952, 953, 954, 955, 956, 957, 958, 964, 1004, 3170, 3171, 3172, 3457, 3458, 3459, 3460];

/// The guard, shared by every session.
#[derive(Debug)]
pub struct Guard {
    enabled: bool,
    /// Lower-case names of the settings no client may set: tenant, claims, role, session user.
    protected: Vec<String>,
    /// Lower-case prefixes of protected settings.
    prefixes: Vec<String>,
    /// Lower-case names (a trailing `*` matches a prefix) of functions that run SQL text.
    sql_functions: Vec<String>,
    /// Lower-case names of relations and functions no client may name.
    forbidden_objects: Vec<String>,
    /// Roles whose tokens are exempt from `operator_allows`.
    operator_roles: Vec<String>,
    operator_allows: Vec<Rule>,
    allow_large_objects: bool,
    max_statement_bytes: usize,
    cache: cache::Verdicts,
    long_checks: Arc<Semaphore>,
}

impl Guard {
    /// The guard `[guard]` and `[context]` describe.
    pub fn from_config(cfg: &Config) -> Self {
        let g: &GuardConfig = &cfg.guard;
        // Besides the context: the settings that change how the server reads SQL text, so
        // that it always reads it as the guard does (UTF-8, standard conforming strings).
        let mut protected = vec![
            cfg.context.tenant_setting.to_lowercase(),
            "role".into(),
            "session_authorization".into(),
            "standard_conforming_strings".into(),
            "backslash_quote".into(),
        ];
        if !cfg.context.claims_setting.is_empty() {
            protected.push(cfg.context.claims_setting.to_lowercase());
        }
        Self {
            enabled: g.enabled,
            protected,
            prefixes: g.protected_prefixes.iter().map(|p| p.to_lowercase()).collect(),
            sql_functions: g.sql_functions.iter().map(|f| f.to_lowercase()).collect(),
            forbidden_objects: g.forbidden_objects.iter().map(|f| f.to_lowercase()).collect(),
            operator_roles: g.operator_roles.clone(),
            operator_allows: Rule::ALL
                .into_iter()
                .filter(|r| g.operator_allows.iter().any(|a| a == r.name()))
                .collect(),
            allow_large_objects: g.allow_large_objects,
            max_statement_bytes: g.max_statement_bytes,
            cache: cache::Verdicts::default(),
            long_checks: Arc::new(Semaphore::new(LONG_CHECKS_AT_ONCE)),
        }
    }

    /// [`Guard::check_sql`] for `sql` in a message the relay owns, long texts as
    /// [`Guard::parse_long`] says.
    pub async fn check_message_sql(
        self: Arc<Self>,
        sql: Bytes,
        role: Option<&str>,
        starts_transaction: bool,
    ) -> Result<(), Refusal> {
        if sql.len() < BLOCKING_BYTES || sql.len() > self.max_statement_bytes {
            // At once, without the copies a blocking thread needs: almost every statement.
            return self.check_sql(&sql, role, starts_transaction);
        }
        let role = role.map(str::to_owned);
        let guard = self.clone();
        let check = move |sql: &[u8]| guard.check_sql(sql, role.as_deref(), starts_transaction);
        self.parse_long(sql, check).await.unwrap_or_else(|| {
            Err(Refusal::of(&Violation::new(Rule::Unparsable, "a statement the guard could not check".into())))
        })
    }

    /// `work` (which parses `text`) run at once for a short text. A long one is parsed on a
    /// blocking thread, so that the relay thread's other sessions go on meanwhile, and waits
    /// while `LONG_CHECKS_AT_ONCE` others are. `None` when it could not run (fail closed).
    pub async fn parse_long<R: Send + 'static>(
        &self,
        text: Bytes,
        work: impl FnOnce(&[u8]) -> R + Send + 'static,
    ) -> Option<R> {
        if text.len() < BLOCKING_BYTES {
            return Some(work(&text));
        }
        // The semaphore is never closed; fail closed all the same.
        let permit = self.long_checks.clone().acquire_owned().await.ok()?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&text)
        });
        // Err: the work panicked (never expected).
        task.await.ok()
    }

    /// Checks SQL text (a Query's, or a Parse's) for a client whose token has `role`.
    /// `starts_transaction`: a simple Query that starts a transaction (see `closing_reset`).
    /// Names with the reserved prefix are refused even when `[guard] enabled = false`: they
    /// would reach the proxy's own injection statement.
    pub fn check_sql(&self, sql: &[u8], role: Option<&str>, starts_transaction: bool) -> Result<(), Refusal> {
        self.check_sql_with(sql, role, starts_transaction, |sql| self.violations(sql))
    }

    /// [`Guard::check_sql`] without the verdict cache (neither read nor filled): the verdict a
    /// cached one must equal. For the fuzz targets and regression tests that compare the two;
    /// the relay never calls it.
    #[doc(hidden)]
    pub fn check_sql_uncached(&self, sql: &[u8], role: Option<&str>, starts_transaction: bool) -> Result<(), Refusal> {
        self.check_sql_with(sql, role, starts_transaction, |sql| self.inspect(sql).into())
    }

    fn check_sql_with(
        &self,
        sql: &[u8],
        role: Option<&str>,
        starts_transaction: bool,
        violations: impl FnOnce(&[u8]) -> Arc<[Violation]>,
    ) -> Result<(), Refusal> {
        if !self.enabled && !may_name_reserved(sql) {
            return Ok(());
        }
        if sql.len() > self.max_statement_bytes {
            return Err(Refusal::too_long(sql.len(), self.max_statement_bytes));
        }
        let violations = violations(sql);
        let relevant: Vec<Violation> = violations
            .iter()
            .filter(|v| self.enabled || v.rule == Rule::ReservedName)
            .filter(|v| !(starts_transaction && v.closing_reset))
            .cloned()
            .collect();
        self.verdict(&relevant, role)
    }

    /// Checks a fast-path FunctionCall of the function with `oid`.
    pub fn check_function_call(&self, oid: u32, role: Option<&str>) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        let v = if !LARGE_OBJECT_OIDS.contains(&oid) {
            Violation::new(Rule::FunctionCall, format!("a fast-path call of function {oid}"))
        } else if self.allow_large_objects {
            return Ok(());
        } else {
            Violation::new(Rule::LargeObject, format!("a fast-path call of large-object function {oid}"))
        };
        self.verdict(&[v], role)
    }

    /// The longest SQL text the guard parses (`[guard] max_statement_bytes`).
    pub fn max_statement_bytes(&self) -> usize {
        self.max_statement_bytes
    }

    /// Whether a token with `role` is an operator's exempt from `rule`.
    pub fn exempts(&self, role: Option<&str>, rule: Rule) -> bool {
        role.is_some_and(|r| self.operator_roles.iter().any(|o| o == r)) && self.operator_allows.contains(&rule)
    }

    fn verdict(&self, violations: &[Violation], role: Option<&str>) -> Result<(), Refusal> {
        match violations.iter().find(|v| !self.exempts(role, v.rule)) {
            Some(v) => Err(Refusal::of(v)),
            None => Ok(()),
        }
    }

    fn violations(&self, sql: &[u8]) -> Arc<[Violation]> {
        let key = cache::digest(&key::cache_key(sql));
        if let Some(found) = self.cache.get(&key) {
            return found;
        }
        let found: Arc<[Violation]> = self.inspect(sql).into();
        if found.iter().all(|v| v.syntax.is_none()) {
            self.cache.insert(key, found.clone());
        }
        found
    }
}

/// The verdict cache's key for `sql` (numeric literals collapsed, see `key`): texts with the
/// same key share one cached verdict. Public for the fuzz target that checks that they may.
#[doc(hidden)]
pub fn cache_key(sql: &[u8]) -> Vec<u8> {
    key::cache_key(sql).into_owned()
}

/// Whether `sql` may spell a reserved name: literally, or through a `U&` escaped identifier.
fn may_name_reserved(sql: &[u8]) -> bool {
    let contains = |needle: &[u8]| sql.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    contains(b"rlsproxy_") || contains(b"u&")
}

#[cfg(test)]
mod tests;
