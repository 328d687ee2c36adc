//! The walk over a statement's parse tree (serialised generically, so no node kind can be
//! skipped by an incomplete traversal). Function names are matched wherever a name appears,
//! not only in calls, so `CREATE AGGREGATE … (sfunc = set_config)` is caught like
//! `SELECT set_config(…)`; string constants are names too (`'pg_stat_activity'::regclass`).

use super::Guard;
use super::rule::{Rule, Violation};
use crate::policy::syntax::syntax_error;
use crate::policy::walk::{Visit, walk};

/// Functions and relations of large objects (`lo` extension's included).
const LARGE_OBJECT_NAMES: &[&str] = &[
    "lo_open",
    "lo_close",
    "lo_creat",
    "lo_create",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_get",
    "lo_put",
    "lo_from_bytea",
    "lo_lseek",
    "lo_lseek64",
    "lo_tell",
    "lo_tell64",
    "lo_truncate",
    "lo_truncate64",
    "loread",
    "lowrite",
    "lo_manage",
    "lo_oid",
    "pg_largeobject",
    "pg_largeobject_metadata",
];

/// `ObjectType` of `… LARGE OBJECT n` in ALTER, COMMENT, GRANT, SECURITY LABEL.
const OBJECT_LARGEOBJECT: i64 = 23;
/// `ShareLock` among the lock modes (lockdefs.h); the stronger ones follow it.
const SHARE_LOCK: i64 = 5;

/// Statements that write to their `relation`: into `pg_settings`, its update rule (which
/// calls set_config) runs.
const WRITES: &[&str] = &["UpdateStmt", "InsertStmt", "DeleteStmt", "MergeStmt", "CopyStmt"];
/// Statements that define what later writes reach: over `pg_settings` (named anywhere in
/// them), a write to the view, or the rule or trigger firing, reaches its update rule.
const DEFINES: &[&str] = &["ViewStmt", "RuleStmt", "CreateTrigStmt"];

impl Guard {
    /// Parses and walks the tree; every violation found, the first of each rule only.
    pub(super) fn inspect(&self, sql: &[u8]) -> Vec<Violation> {
        let unparsable = |why: String| vec![Violation::new(Rule::Unparsable, why)];
        let text = as_parsed_by_the_server(sql);
        let parsed = match pg_query::parse(&text, 0) {
            Ok(parsed) => parsed,
            Err(e) => match syntax_error(&text) {
                Some(syntax) => return vec![Violation::syntax(syntax)],
                None => return unparsable(format!("a statement the parser cannot parse ({e})")),
            },
        };
        let mut v = Inspection::new(self);
        if walk(&parsed.protobuf, &mut v).is_err() {
            return unparsable("a parse tree that cannot be inspected".into());
        }
        let mut found = v.found;
        let is_reset = |v: &Violation| matches!(v.rule, Rule::ResetAll | Rule::Discard);
        let resets = found.iter().filter(|v| is_reset(v)).count();
        if v.ends_with_reset && resets == 1 && !v.opens_block {
            for v in found.iter_mut().filter(|v| is_reset(v)) {
                v.closing_reset = true;
            }
        }
        // The verdict is the first violation an exemption does not cover: later ones of
        // the same rule change nothing, and would only grow the cache.
        let mut seen = Vec::new();
        found.retain(|v| {
            let first = !seen.contains(&v.rule);
            seen.push(v.rule);
            first
        });
        found
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

/// A `SET`/`RESET` being walked (they do not nest).
#[derive(Debug, Default)]
struct SetStmt {
    name: String,
    kind: i64,
    /// The first string constant of its value.
    value: Option<String>,
}

/// What one walk found, and what it needs to remember on the way.
struct Inspection<'g> {
    guard: &'g Guard,
    found: Vec<Violation>,
    opens_block: bool,
    /// The last statement is `RESET ALL` or `DISCARD`.
    ends_with_reset: bool,
    /// The current statement's kind (its first node) and whether it is `RESET ALL` or `DISCARD`.
    statement_kind: Option<&'static str>,
    statement_resets: bool,
    /// The current statement names `pg_settings` / defines a view, rule or trigger.
    names_settings: bool,
    defines: bool,
    set: Option<SetStmt>,
}

impl<'g> Inspection<'g> {
    fn new(guard: &'g Guard) -> Self {
        Self {
            guard,
            found: Vec::new(),
            opens_block: false,
            ends_with_reset: false,
            statement_kind: None,
            statement_resets: false,
            names_settings: false,
            defines: false,
            set: None,
        }
    }

    fn add(&mut self, rule: Rule, what: String) {
        self.found.push(Violation::new(rule, what));
    }

    /// `SET`/`RESET` at its end, when its name, kind and value are known.
    fn check_set(&mut self, set: SetStmt) {
        if self.statement_kind == Some("VariableSetStmt") && !self.statement_resets {
            self.statement_resets = set.kind == 6;
        }
        let name = set.name.to_lowercase();
        // VariableSetKind: 1 = SET … TO value, 4 = SET TRANSACTION/SESSION CHARACTERISTICS …,
        // 6 = RESET ALL.
        match set.kind {
            6 => self.add(Rule::ResetAll, "RESET ALL".into()),
            4 => {}
            // Setting it to the value the proxy keeps anyway changes nothing: ActiveRecord's
            // PostgreSQL adapter sends `SET standard_conforming_strings = on` at every connect.
            // (1: SET … TO value; with a second value the server refuses the SET.)
            1 if name == "standard_conforming_strings" && matches!(set.value.as_deref(), Some("on" | "true")) => {}
            _ if self.guard.is_protected(&name) => self.add(Rule::SetProtected, format!("changing \"{name}\"")),
            _ if name == "client_encoding" && set.value.is_some_and(|v| !encoding_is_safe(&v)) => {
                self.add(Rule::SetProtected, "a client_encoding whose characters may contain ASCII bytes".into())
            }
            _ => {}
        }
    }

    fn check_name(&mut self, key: &str, value: &str) {
        let name = value.to_lowercase();
        let shown = || name.chars().take(63).collect::<String>();
        let g = self.guard;
        if name.starts_with("rlsproxy_") {
            self.add(Rule::ReservedName, format!("the name \"{}\", reserved by rlsproxy", shown()));
        } else if !matches!(key, "sval" | "relname") {
            // Statement, portal and column names: only the reserved prefix matters.
        } else if name == "set_config" {
            self.add(Rule::SetConfig, "set_config".into());
        } else if g.runs_sql(&name) {
            self.add(Rule::SqlFunction, format!("{}, which runs SQL text or reads a relation by OID", shown()));
        } else if g.forbidden_objects.contains(&name) {
            self.add(Rule::ForbiddenObject, format!("{name}, which shows or touches other sessions"));
        } else if !g.allow_large_objects && LARGE_OBJECT_NAMES.contains(&name.as_str()) {
            self.add(Rule::LargeObject, format!("{name}: large objects are not isolated between tenants"));
        }
    }
}

/// The last `n`th name of `path` (1: the innermost).
fn nth_last<'p>(path: &[&'p str], n: usize) -> Option<&'p str> {
    path.len().checked_sub(n).and_then(|i| path.get(i)).copied()
}

impl Visit for Inspection<'_> {
    fn enter(&mut self, path: &[&'static str]) {
        let Some(kind) = nth_last(path, 1) else { return };
        if self.statement_kind.is_none() && kind.ends_with("Stmt") {
            self.statement_kind = Some(kind);
        }
        self.opens_block |= kind == "TransactionStmt";
        self.defines |= DEFINES.contains(&kind);
        match kind {
            "VariableSetStmt" => self.set = Some(SetStmt::default()),
            "DiscardStmt" => {
                self.statement_resets |= self.statement_kind == Some("DiscardStmt");
                self.add(Rule::Discard, "DISCARD".into())
            }
            "DoStmt" => self.add(Rule::Do, "a DO block".into()),
            "CreateFunctionStmt" | "AlterFunctionStmt" => {
                self.add(Rule::CreateFunction, "creating or altering a function".into())
            }
            "AlterRoleSetStmt" | "AlterDatabaseSetStmt" | "AlterSystemStmt" => {
                self.add(Rule::AlterSettings, "changing role, database or system settings".into())
            }
            "CreateTrigStmt" | "RuleStmt" | "CreateEventTrigStmt" => {
                self.add(Rule::CreateTrigger, "creating a trigger or rule".into())
            }
            "ExplainStmt" => self.add(Rule::Explain, "EXPLAIN (its row estimates show other tenants' data)".into()),
            "GrantStmt" | "GrantRoleStmt" | "AlterDefaultPrivilegesStmt" => {
                self.add(Rule::Grant, "GRANT, REVOKE or ALTER DEFAULT PRIVILEGES".into())
            }
            "CreateRoleStmt" | "AlterRoleStmt" | "DropRoleStmt" => {
                self.add(Rule::AlterRole, "creating, altering or dropping a role (every tenant is one role)".into())
            }
            _ => {}
        }
    }

    fn leave(&mut self, path: &[&'static str]) {
        if nth_last(path, 1) == Some("VariableSetStmt")
            && let Some(set) = self.set.take()
        {
            self.check_set(set);
        }
    }

    fn text(&mut self, path: &[&'static str], value: &str) {
        let (key, parent) = (nth_last(path, 1).unwrap_or_default(), nth_last(path, 2));
        if let Some(set) = self.set.as_mut() {
            if key == "name" && parent == Some("VariableSetStmt") {
                set.name = value.to_owned();
            } else if key == "sval" && path.contains(&"args") && set.value.is_none() {
                set.value = Some(value.to_lowercase());
            }
        }
        match key {
            "relname" if value == "pg_settings" => {
                self.names_settings = true;
                if parent == Some("relation") && nth_last(path, 3).is_some_and(|s| WRITES.contains(&s)) {
                    self.add(Rule::SetConfig, "writing pg_settings (its update rule calls set_config)".into());
                }
            }
            "filename" if parent == Some("CopyStmt") && !value.is_empty() => {
                self.add(Rule::ServerFile, "COPY to or from a server file or program".into())
            }
            _ => {}
        }
        if matches!(key, "sval" | "name" | "relname" | "portalname") {
            self.check_name(key, value);
        }
    }

    fn int(&mut self, path: &[&'static str], value: i64) {
        let (key, parent) = (nth_last(path, 1), nth_last(path, 2));
        if let Some(set) = self.set.as_mut().filter(|_| key == Some("kind") && parent == Some("VariableSetStmt")) {
            set.kind = value;
        }
        // LockStmt's mode: SHARE (5) and stronger hold off other sessions' writes.
        if key == Some("mode") && parent == Some("LockStmt") && value >= SHARE_LOCK {
            self.add(Rule::Lock, "LOCK TABLE in SHARE mode or stronger (it holds off other tenants)".into());
        }
        if matches!(key, Some("objtype" | "object_type"))
            && value == OBJECT_LARGEOBJECT
            && !self.guard.allow_large_objects
        {
            self.add(Rule::LargeObject, "a large object (not isolated between tenants)".into());
        }
    }

    fn flag(&mut self, path: &[&'static str], value: bool) {
        if value && nth_last(path, 1) == Some("is_program") && nth_last(path, 2) == Some("CopyStmt") {
            self.add(Rule::ServerFile, "COPY to or from a server file or program".into());
        }
    }

    fn statement(&mut self, start: bool) {
        if start {
            (self.statement_kind, self.statement_resets) = (None, false);
            (self.names_settings, self.defines) = (false, false);
        } else {
            self.ends_with_reset = self.statement_resets;
            if self.names_settings && self.defines {
                self.add(Rule::SetConfig, "a view, rule or trigger over pg_settings".into());
            }
        }
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
