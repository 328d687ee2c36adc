//! The guard's rules, what it found, and what the client gets.

use crate::policy::syntax::SyntaxError;
use crate::protocol::{PgError, ProxyError};

/// A rule the guard applies; operators may be exempted from some (see `[guard]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// SET / SET LOCAL / RESET of a protected setting, SET ROLE, SET SESSION AUTHORIZATION.
    SetProtected,
    /// RESET ALL.
    ResetAll,
    /// DISCARD.
    Discard,
    /// set_config anywhere, and writes to `pg_settings` (whose update rule calls it).
    SetConfig,
    /// ALTER ROLE|USER|DATABASE … SET/RESET, ALTER SYSTEM.
    AlterSettings,
    /// DO blocks.
    Do,
    /// CREATE/ALTER FUNCTION or PROCEDURE.
    CreateFunction,
    /// Functions that run SQL text or read a relation given by OID (query_to_xml,
    /// table_to_xml, crosstab, dblink…).
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
    /// CREATE TRIGGER, CREATE RULE, CREATE EVENT TRIGGER: code that runs in other
    /// statements (refint's triggers even paste their arguments into SQL).
    CreateTrigger,
    /// EXPLAIN: the planner's row estimates come from statistics over every tenant's rows.
    Explain,
    /// Large objects: no row-level security, all owned by the proxy's role.
    LargeObject,
    /// COPY … PROGRAM and COPY to or from a server-side file.
    ServerFile,
    /// GRANT, REVOKE, ALTER DEFAULT PRIVILEGES: every tenant is the same role.
    Grant,
    /// CREATE/ALTER/DROP ROLE, USER or GROUP: every tenant is the same role, whose password
    /// any of them could otherwise change.
    AlterRole,
    /// LOCK TABLE in SHARE mode or stronger: it holds off other tenants' writes (or reads)
    /// of the whole table.
    Lock,
    /// A statement longer than `[guard] max_statement_bytes` (not parsed).
    TooLong,
    /// pg_notify with a channel that is not a string constant (or LISTEN/NOTIFY the proxy
    /// cannot scope to the tenant's channels, see `policy::notify`). Applies with the
    /// guard disabled too.
    NotifyChannel,
    /// An advisory lock function the proxy cannot scope to the tenant's keys (named other
    /// than in a call with its keys, see `policy::advisory`). Applies with the guard
    /// disabled too; exempt tokens keep the database-wide key space.
    AdvisoryLock,
}

impl Rule {
    /// The rule's name in configuration, messages and metrics.
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
            Rule::CreateTrigger => "create_trigger",
            Rule::Explain => "explain",
            Rule::LargeObject => "large_object",
            Rule::ServerFile => "server_file",
            Rule::Grant => "grant",
            Rule::AlterRole => "alter_role",
            Rule::Lock => "lock",
            Rule::TooLong => "statement_too_long",
            Rule::NotifyChannel => "notify_channel",
            Rule::AdvisoryLock => "advisory_lock",
        }
    }

    /// Every rule, for configuration checks.
    pub const ALL: [Rule; 22] = [
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
        Rule::CreateTrigger,
        Rule::Explain,
        Rule::LargeObject,
        Rule::ServerFile,
        Rule::Grant,
        Rule::AlterRole,
        Rule::Lock,
        Rule::TooLong,
        Rule::NotifyChannel,
        Rule::AdvisoryLock,
    ];

    /// Rules no token may be exempted from: they would let it change its own tenant, or
    /// make the guard parse what it bounds.
    pub fn never_exempt(self) -> bool {
        matches!(self, Rule::SetProtected | Rule::SetConfig | Rule::Unparsable | Rule::TooLong)
    }
}

/// One reason a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// What was found, for the message.
    pub what: String,
    /// A `RESET ALL` or `DISCARD` that ends a simple Query opening no transaction block:
    /// harmless when that Query starts a transaction (nothing runs after it before the next
    /// transaction, whose injection the relay awaits, see `Relay::awaits_reset`). Pools send
    /// exactly that: asyncpg's ends with `RESET ALL`, Npgsql's is `DISCARD ALL`.
    pub closing_reset: bool,
    /// For an unparsable text, the parser's error: the client gets it as PostgreSQL would
    /// send it (drivers rely on its SQLSTATE and position). Never cached: the position
    /// depends on the literals the cache key collapses.
    pub syntax: Option<SyntaxError>,
}

impl Violation {
    /// A violation of `rule`; `what` is cut to a name's length, so that a verdict stays small.
    pub fn new(rule: Rule, what: String) -> Self {
        Self { rule, what: truncated(what), closing_reset: false, syntax: None }
    }

    /// An unparsable text, refused with the parser's own error.
    pub fn syntax(e: SyntaxError) -> Self {
        Self { syntax: Some(e), ..Self::new(Rule::Unparsable, "a statement the parser cannot parse".into()) }
    }
}

/// A refused statement: the rule (for the metrics) and the error the client gets.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The rule that refused it.
    pub rule: Rule,
    /// The ErrorResponse to send.
    pub error: PgError,
}

impl Refusal {
    /// The guard's ERROR 42501 for `v`; PostgreSQL's own 42601 for a syntax error.
    pub fn of(v: &Violation) -> Self {
        if let Some(e) = &v.syntax {
            let error = ProxyError::Syntax { message: e.message.clone(), position: e.position };
            return Self { rule: v.rule, error: error.into() };
        }
        Self { rule: v.rule, error: ProxyError::Refused { what: v.what.clone(), rule: v.rule.name() }.into() }
    }

    /// ERROR 54000 for a statement longer than `limit` bytes, not parsed.
    pub fn too_long(len: usize, limit: usize) -> Self {
        let error = ProxyError::StatementTooLong { len, limit }.into();
        Self { rule: Rule::TooLong, error }
    }
}

/// At most 200 bytes of `what` (on a character boundary): names are at most 63 bytes, but
/// a matched string constant may be as long as the statement.
fn truncated(mut what: String) -> String {
    const MAX: usize = 200;
    if what.len() > MAX {
        let mut end = MAX;
        while !what.is_char_boundary(end) {
            end -= 1;
        }
        what.truncate(end);
        what.push('…');
    }
    what
}
