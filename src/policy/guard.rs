//! The statement guard (DESIGN.md section 4): every Query and Parse is parsed
//! with PostgreSQL's own parser (libpg_query) and refused when it could change
//! the tenant context or run SQL the guard cannot see. Verdicts are cached by
//! statement text with numeric literals collapsed (see `key`), so each
//! statement shape is parsed once.
//!
//! The walk is over the whole parse tree (serialised generically, so no node
//! kind can be skipped by an incomplete traversal). Function names are matched
//! wherever a name appears, not only in calls, so `CREATE AGGREGATE … (sfunc =
//! set_config)` is caught like `SELECT set_config(…)`. A statement the parser
//! cannot parse is refused, never forwarded.

mod key;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::config::{Config, GuardConfig};
use crate::protocol::PgError;

/// Distinct statements whose verdicts are kept; the cache is emptied when full.
const CACHE_CAPACITY: usize = 8192;

/// A rule the guard applies; operators may be exempted from some (see `[guard]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// SET / SET LOCAL / RESET of a protected setting, SET ROLE, SET SESSION AUTHORIZATION.
    SetProtected,
    /// RESET ALL.
    ResetAll,
    /// DISCARD.
    Discard,
    /// set_config anywhere.
    SetConfig,
    /// ALTER ROLE|USER|DATABASE … SET/RESET, ALTER SYSTEM.
    AlterSettings,
    /// DO blocks.
    Do,
    /// CREATE/ALTER FUNCTION or PROCEDURE.
    CreateFunction,
    /// Functions that run SQL text (query_to_xml, ts_stat, dblink…).
    SqlFunction,
    /// A statement the parser cannot parse.
    Unparsable,
    /// A fast-path FunctionCall of a function not on the allow-list.
    FunctionCall,
    /// A name with the proxy's reserved prefix (`rlsproxy_`), however it is spelled.
    ReservedName,
    /// Objects that show or touch other sessions (`[guard] forbidden_objects`):
    /// pg_stat_activity, pg_cancel_backend… Every session runs as the same upstream role.
    ForbiddenObject,
    /// pg_notify with a channel that is not a string constant (or LISTEN/NOTIFY the proxy
    /// cannot scope to the tenant's channels, see `policy::notify`). Applies with the
    /// guard disabled too.
    NotifyChannel,
}

impl Rule {
    /// The rule's name in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Rule::SetProtected => "set_protected",
            Rule::ResetAll => "reset_all",
            Rule::Discard => "discard",
            Rule::SetConfig => "set_config",
            Rule::AlterSettings => "alter_settings",
            Rule::Do => "do",
            Rule::CreateFunction => "create_function",
            Rule::SqlFunction => "sql_function",
            Rule::Unparsable => "unparsable",
            Rule::FunctionCall => "function_call",
            Rule::ReservedName => "reserved_name",
            Rule::ForbiddenObject => "forbidden_object",
            Rule::NotifyChannel => "notify_channel",
        }
    }

    /// Every rule, for configuration checks.
    pub const ALL: [Rule; 13] = [
        Rule::SetProtected,
        Rule::ResetAll,
        Rule::Discard,
        Rule::SetConfig,
        Rule::AlterSettings,
        Rule::Do,
        Rule::CreateFunction,
        Rule::SqlFunction,
        Rule::Unparsable,
        Rule::FunctionCall,
        Rule::ReservedName,
        Rule::ForbiddenObject,
        Rule::NotifyChannel,
    ];
}

/// One reason a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// What was found, for the message.
    pub what: String,
    /// A `RESET ALL` that ends a simple Query opening no transaction block: harmless when
    /// that Query starts a transaction (nothing runs after it before the next transaction,
    /// whose injection sets the context again). Pools such as asyncpg's send exactly that.
    pub closing_reset: bool,
}

/// A refused statement: the rule (for the metrics) and the error the client gets.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The rule that refused it.
    pub rule: Rule,
    /// The ErrorResponse to send.
    pub error: PgError,
}

/// Large-object functions (by their fixed OIDs in pg_proc) that libpq's fast-path API calls:
/// the only FunctionCall targets allowed.
const LARGE_OBJECT_OIDS: &[u32] =
    &[715, 764, 765, 952, 953, 954, 955, 956, 957, 958, 964, 1004, 3170, 3171, 3172, 3457, 3458, 3459, 3460];

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
    cache: Mutex<Verdicts>,
}

/// Statement text → what is wrong with it (empty: nothing).
type Verdicts = HashMap<Box<[u8]>, Arc<[Violation]>>;

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
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks SQL text (a Query's, or a Parse's) for a client whose token has `role`.
    /// `starts_transaction`: a simple Query that starts a transaction (see `closing_reset`).
    /// Names with the reserved prefix are refused even when `[guard] enabled = false`: they
    /// would reach the proxy's own injection statement.
    pub fn check_sql(&self, sql: &[u8], role: Option<&str>, starts_transaction: bool) -> Result<(), Refusal> {
        if !self.enabled && !may_name_reserved(sql) {
            return Ok(());
        }
        let violations = self.violations(sql);
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
        if !self.enabled || LARGE_OBJECT_OIDS.contains(&oid) {
            return Ok(());
        }
        let what = format!("a fast-path call of function {oid}");
        let v = Violation { rule: Rule::FunctionCall, what, closing_reset: false };
        self.verdict(&[v], role)
    }

    /// Whether a token with `role` is an operator's exempt from `rule`.
    pub fn exempts(&self, role: Option<&str>, rule: Rule) -> bool {
        role.is_some_and(|r| self.operator_roles.iter().any(|o| o == r)) && self.operator_allows.contains(&rule)
    }

    /// The refusal of a statement for `rule`, `what` naming what was found.
    pub fn refusal(rule: Rule, what: &str) -> Refusal {
        let error = PgError::error("42501", format!("rlsproxy refused the statement: {what} (rule {})", rule.name()))
            .with_hint("The tenant context comes from the token and cannot be changed or escaped with SQL.");
        Refusal { rule, error }
    }

    fn verdict(&self, violations: &[Violation], role: Option<&str>) -> Result<(), Refusal> {
        match violations.iter().find(|v| !self.exempts(role, v.rule)) {
            Some(v) => Err(Self::refusal(v.rule, &v.what)),
            None => Ok(()),
        }
    }

    fn violations(&self, sql: &[u8]) -> Arc<[Violation]> {
        let key = key::cache_key(sql);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(key.as_ref()) {
            return found.clone();
        }
        drop(cache);
        let found: Arc<[Violation]> = self.inspect(sql).into();
        cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key.into_owned().into(), found.clone());
        found
    }

    /// Parses and walks the tree; every violation found.
    fn inspect(&self, sql: &[u8]) -> Vec<Violation> {
        let unparsable = |why: String| vec![Violation { rule: Rule::Unparsable, what: why, closing_reset: false }];
        let text = as_parsed_by_the_server(sql);
        let tree = match pg_query::parse(&text, 0) {
            Ok(parsed) => serde_json::to_value(&parsed.protobuf),
            Err(e) => return unparsable(format!("a statement the parser cannot parse ({e})")),
        };
        let Ok(tree) = tree else { return unparsable("a parse tree that cannot be inspected".into()) };
        let mut found = Vec::new();
        let mut opens_block = false;
        let mut stack = vec![&tree];
        while let Some(value) = stack.pop() {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        opens_block |= key == "TransactionStmt";
                        self.inspect_node(key, child, &mut found);
                        stack.push(child);
                    }
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        let last = tree.get("stmts").and_then(Value::as_array).and_then(|s| s.last());
        let ends_with_reset_all = last
            .and_then(|s| s.pointer("/stmt/node/VariableSetStmt/kind"))
            .and_then(Value::as_i64)
            .is_some_and(|kind| kind == 6);
        let resets = found.iter().filter(|v| v.rule == Rule::ResetAll).count();
        if ends_with_reset_all && resets == 1 && !opens_block {
            for v in found.iter_mut().filter(|v| v.rule == Rule::ResetAll) {
                v.closing_reset = true;
            }
        }
        found
    }

    fn inspect_node(&self, kind: &str, node: &Value, found: &mut Vec<Violation>) {
        let mut add = |rule: Rule, what: String| found.push(Violation { rule, what, closing_reset: false });
        match kind {
            "VariableSetStmt" => {
                let name = node.get("name").and_then(Value::as_str).unwrap_or_default().to_lowercase();
                // VariableSetKind: 4 = SET TRANSACTION/SESSION CHARACTERISTICS …, 6 = RESET ALL.
                match node.get("kind").and_then(Value::as_i64) {
                    Some(6) => add(Rule::ResetAll, "RESET ALL".into()),
                    Some(4) => {}
                    _ if self.is_protected(&name) => add(Rule::SetProtected, format!("changing \"{name}\"")),
                    _ if name == "client_encoding" && set_value(node).is_some_and(|v| !encoding_is_safe(&v)) => {
                        add(Rule::SetProtected, "a client_encoding whose characters may contain ASCII bytes".into())
                    }
                    _ => {}
                }
            }
            "DiscardStmt" => add(Rule::Discard, "DISCARD".into()),
            "DoStmt" => add(Rule::Do, "a DO block".into()),
            "CreateFunctionStmt" | "AlterFunctionStmt" => {
                add(Rule::CreateFunction, "creating or altering a function".into())
            }
            "AlterRoleSetStmt" | "AlterDatabaseSetStmt" | "AlterSystemStmt" => {
                add(Rule::AlterSettings, "changing role, database or system settings".into())
            }
            "sval" | "name" | "relname" | "portalname" => {
                let name = node.as_str().unwrap_or_default().to_lowercase();
                let names_object = matches!(kind, "sval" | "relname");
                if name.starts_with("rlsproxy_") {
                    add(Rule::ReservedName, format!("the name \"{name}\", reserved by rlsproxy"));
                } else if !names_object {
                    // Statement, portal and column names: only the reserved prefix matters.
                } else if name == "set_config" {
                    add(Rule::SetConfig, "set_config".into());
                } else if self.runs_sql(&name) {
                    add(Rule::SqlFunction, format!("{name}, which runs SQL text"));
                } else if self.forbidden_objects.contains(&name) {
                    add(Rule::ForbiddenObject, format!("{name}, which shows or touches other sessions"));
                }
            }
            _ => {}
        }
    }

    fn is_protected(&self, name: &str) -> bool {
        self.protected.iter().any(|p| p == name) || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    fn runs_sql(&self, name: &str) -> bool {
        self.sql_functions.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => f == name,
        })
    }
}

/// `sql` as UTF-8 with the structure the server sees. Text that is not UTF-8 comes from a
/// session in a single-byte or EUC client encoding (the guard refuses the encodings whose
/// multibyte characters may contain an ASCII byte): there every byte from 0x80 up belongs to a
/// non-ASCII character, so each becomes U+FFFD and every quote, keyword and identifier stays
/// where the server, after converting the text, finds it. (A UTF-8 session's server refuses
/// such text itself.)
fn as_parsed_by_the_server(sql: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(sql) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => sql.iter().map(|&b| if b.is_ascii() { char::from(b) } else { char::REPLACEMENT_CHARACTER }).collect(),
    }
}

/// Whether `sql` may spell a reserved name: literally, or through a `U&` escaped identifier.
fn may_name_reserved(sql: &[u8]) -> bool {
    let contains = |needle: &[u8]| sql.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    contains(b"rlsproxy_") || contains(b"u&")
}

/// The value of `SET name = <constant>`, lower case.
fn set_value(node: &Value) -> Option<String> {
    let arg = node.get("args")?.as_array()?.first()?;
    let text = arg.pointer("/node/AConst/val/Sval/sval")?;
    Some(text.as_str()?.to_lowercase())
}

/// Client encodings whose multibyte characters never contain ASCII bytes: the server reads
/// SQL text in them the way the guard reads it as UTF-8. (SJIS, BIG5, GBK, UHC, GB18030 and
/// JOHAB may hide a quote or backslash inside a character.)
pub fn encoding_is_safe(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    !matches!(
        n.as_str(),
        "sjis"
            | "shiftjis"
            | "mskanji"
            | "win932"
            | "windows932"
            | "cp932"
            | "shiftjis2004"
            | "big5"
            | "win950"
            | "windows950"
            | "cp950"
            | "gbk"
            | "win936"
            | "windows936"
            | "cp936"
            | "uhc"
            | "win949"
            | "windows949"
            | "cp949"
            | "gb18030"
            | "johab"
    )
}

#[cfg(test)]
mod tests;
