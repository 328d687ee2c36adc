//! The walk over a statement's parse tree (serialised generically, so no node kind can be
//! skipped by an incomplete traversal). Function names are matched wherever a name appears,
//! not only in calls, so `CREATE AGGREGATE … (sfunc = set_config)` is caught like
//! `SELECT set_config(…)`; string constants are names too (`'pg_stat_activity'::regclass`).

use serde_json::Value;

use super::Guard;
use super::rule::{Rule, Violation};

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
        let tree = match pg_query::parse(&text, 0) {
            Ok(parsed) => serde_json::to_value(&parsed.protobuf),
            Err(e) => return unparsable(format!("a statement the parser cannot parse ({e})")),
        };
        let Ok(tree) = tree else { return unparsable("a parse tree that cannot be inspected".into()) };
        let mut found = Vec::new();
        let mut opens_block = false;
        let stmts = tree.get("stmts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for stmt in stmts {
            let (mut names_settings, mut defines) = (false, false);
            let mut stack = vec![stmt];
            while let Some(value) = stack.pop() {
                match value {
                    Value::Object(map) => {
                        for (key, child) in map {
                            opens_block |= key == "TransactionStmt";
                            defines |= DEFINES.contains(&key.as_str());
                            names_settings |= key == "relname" && child.as_str() == Some("pg_settings");
                            self.inspect_node(key, child, &mut found);
                            stack.push(child);
                        }
                    }
                    Value::Array(items) => stack.extend(items),
                    _ => {}
                }
            }
            if names_settings && defines {
                found.push(Violation::new(Rule::SetConfig, "a view, rule or trigger over pg_settings".into()));
            }
        }
        let ends_with_reset_all = stmts
            .last()
            .and_then(|s| s.pointer("/stmt/node/VariableSetStmt/kind"))
            .and_then(Value::as_i64)
            .is_some_and(|kind| kind == 6);
        let resets = found.iter().filter(|v| v.rule == Rule::ResetAll).count();
        if ends_with_reset_all && resets == 1 && !opens_block {
            for v in found.iter_mut().filter(|v| v.rule == Rule::ResetAll) {
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

    fn inspect_node(&self, kind: &str, node: &Value, found: &mut Vec<Violation>) {
        let mut add = |rule: Rule, what: String| found.push(Violation::new(rule, what));
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
            k if WRITES.contains(&k) && node.pointer("/relation/relname").and_then(Value::as_str) == Some("pg_settings") => {
                add(Rule::SetConfig, "writing pg_settings (its update rule calls set_config)".into())
            }
            "DiscardStmt" => add(Rule::Discard, "DISCARD".into()),
            "DoStmt" => add(Rule::Do, "a DO block".into()),
            "CreateFunctionStmt" | "AlterFunctionStmt" => {
                add(Rule::CreateFunction, "creating or altering a function".into())
            }
            "AlterRoleSetStmt" | "AlterDatabaseSetStmt" | "AlterSystemStmt" => {
                add(Rule::AlterSettings, "changing role, database or system settings".into())
            }
            "CreateTrigStmt" | "RuleStmt" | "CreateEventTrigStmt" => {
                add(Rule::CreateTrigger, "creating a trigger or rule".into())
            }
            "ExplainStmt" => add(Rule::Explain, "EXPLAIN (its row estimates show other tenants' data)".into()),
            "CopyStmt" if copies_server_side(node) => {
                add(Rule::ServerFile, "COPY to or from a server file or program".into())
            }
            "GrantStmt" | "GrantRoleStmt" | "AlterDefaultPrivilegesStmt" => {
                add(Rule::Grant, "GRANT, REVOKE or ALTER DEFAULT PRIVILEGES".into())
            }
            "objtype" | "object_type" if !self.allow_large_objects && node.as_i64() == Some(OBJECT_LARGEOBJECT) => {
                add(Rule::LargeObject, "a large object (not isolated between tenants)".into())
            }
            "sval" | "name" | "relname" | "portalname" => {
                let name = node.as_str().unwrap_or_default().to_lowercase();
                let shown = || name.chars().take(63).collect::<String>();
                let names_object = matches!(kind, "sval" | "relname");
                if name.starts_with("rlsproxy_") {
                    add(Rule::ReservedName, format!("the name \"{}\", reserved by rlsproxy", shown()));
                } else if !names_object {
                    // Statement, portal and column names: only the reserved prefix matters.
                } else if name == "set_config" {
                    add(Rule::SetConfig, "set_config".into());
                } else if self.runs_sql(&name) {
                    add(Rule::SqlFunction, format!("{}, which runs SQL text or reads a relation by OID", shown()));
                } else if self.forbidden_objects.contains(&name) {
                    add(Rule::ForbiddenObject, format!("{name}, which shows or touches other sessions"));
                } else if !self.allow_large_objects && LARGE_OBJECT_NAMES.contains(&name.as_str()) {
                    add(Rule::LargeObject, format!("{name}: large objects are not isolated between tenants"));
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

/// `COPY … PROGRAM '…'` or `COPY … TO/FROM '<file>'` (STDIN/STDOUT have no file name).
fn copies_server_side(node: &Value) -> bool {
    node.get("is_program").and_then(Value::as_bool).unwrap_or(false)
        || node.get("filename").and_then(Value::as_str).is_some_and(|f| !f.is_empty())
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
