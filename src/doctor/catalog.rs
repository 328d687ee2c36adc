//! Reading the catalog through a tokio-postgres client (`upstream::catalog`: the relay's TLS
//! and login), typed rows, and the few pieces of SQL text the checks share: which tables are
//! audited, which are protected, and identifier quoting for the fixes.
//!
//! Conventions of the queries: `$1` is the audited schemas (`text[]`, empty: all but the
//! system ones), `$2` the tenant column, `$3` the tenant roles (`text[]`); lists come back as
//! JSON arrays in text (no separator can clash with a quoted name).

use serde::de::DeserializeOwned;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, Row};

use super::DoctorError;
use crate::upstream::catalog::from_client;

/// SQL predicate: namespace `n` is audited: one of `$1`, or when `$1` is empty any schema
/// but the system ones (`pg_catalog`, `pg_toast`, temporary schemas: all `pg_*`; and
/// `information_schema`).
macro_rules! audited_schema {
    () => {
        "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
         AND (cardinality($1::text[]) = 0 OR n.nspname = ANY ($1::text[]))"
    };
}

/// SQL predicate: `c` (pg_class, namespace `n`) is a tenant table the doctor audits: a table
/// (plain or partitioned; partitions too, since they can be queried directly and then only
/// their own policies apply) in an audited schema, with the tenant column `$2`.
macro_rules! audited_table {
    () => {
        concat!(
            "c.relkind IN ('r', 'p') AND ",
            $crate::doctor::catalog::audited_schema!(),
            " AND EXISTS (SELECT 1 FROM pg_attribute ta WHERE ta.attrelid = c.oid AND ta.attname = $2 \
               AND ta.attnum > 0 AND NOT ta.attisdropped)"
        )
    };
}

/// SQL subquery: the oids of the tables whose rows something could leak: every audited tenant
/// table, and every table with row-level security enabled, wherever it is.
macro_rules! protected_tables {
    () => {
        concat!(
            "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND (c.relrowsecurity OR (",
            $crate::doctor::catalog::audited_table!(),
            ")))"
        )
    };
}

/// SQL expression: the JSON array of tenant roles (`$3`, or the parameter given first) for
/// which `$privilege_check` (a boolean expression over role oid `t.oid`) holds.
macro_rules! tenant_roles_where {
    ($check:expr) => {
        $crate::doctor::catalog::tenant_roles_where!("$3", $check)
    };
    ($roles:literal, $check:expr) => {
        concat!(
            "coalesce((SELECT json_agg(t.rolname ORDER BY t.rolname) FROM pg_roles t \
              WHERE t.rolname = ANY (",
            $roles,
            "::text[]) AND ",
            $check,
            "), '[]')::text"
        )
    };
}

pub(super) use {audited_schema, audited_table, protected_tables, tenant_roles_where};

/// A query parameter.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

/// Runs one catalog query; `what` names it in errors.
pub(super) async fn query(
    client: &Client,
    what: &'static str,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, DoctorError> {
    client.query(sql, params).await.map_err(|e| DoctorError::Query { what, source: from_client(e) })
}

/// Typed access to the fields of one catalog row.
pub(super) struct Fields<'a> {
    row: &'a Row,
    what: &'static str,
}

impl<'a> Fields<'a> {
    /// The fields of `row`, from the query named `what`.
    pub(super) fn new(row: &'a Row, what: &'static str) -> Self {
        Self { row, what }
    }

    /// Field `i` as `T`.
    pub(super) fn get<T: FromSql<'a>>(&self, i: usize) -> Result<T, DoctorError> {
        // tokio-postgres's message names the column already.
        self.row.try_get(i).map_err(|e| DoctorError::Catalog { what: self.what, detail: e.to_string() })
    }

    /// A nullable text field.
    pub(super) fn opt(&self, i: usize) -> Result<Option<&'a str>, DoctorError> {
        self.get(i)
    }

    /// A text field that must not be NULL.
    pub(super) fn text(&self, i: usize) -> Result<&'a str, DoctorError> {
        self.get(i)
    }

    /// A boolean field.
    pub(super) fn flag(&self, i: usize) -> Result<bool, DoctorError> {
        self.get(i)
    }

    /// A JSON value sent as text (arrays of names, objects).
    pub(super) fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T, DoctorError> {
        let text = self.text(i)?;
        serde_json::from_str(text)
            .map_err(|e| DoctorError::Catalog { what: self.what, detail: format!("column {i}: {e}") })
    }
}

/// PostgreSQL's key words that cannot be a column or role name unquoted (the "reserved" and
/// "reserved (can be function or type)" ones of the key word appendix, PostgreSQL 15-17).
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization", "binary", "both",
    "case", "cast", "check", "collate", "collation", "column", "concurrently", "constraint", "create", "cross",
    "current_catalog", "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
    "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch",
    "for", "foreign", "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
    "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
    "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order", "outer", "overlaps",
    "placing", "primary", "references", "returning", "right", "select", "session_user", "similar", "some",
    "symmetric", "system_user", "table", "tablesample", "then", "to", "trailing", "true", "union", "unique", "user",
    "using", "variadic", "verbose", "when", "where", "window", "with",
];

/// `name` as an SQL identifier, quoted only when it must be (as `quote_ident` does).
pub(super) fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !RESERVED.contains(&name);
    if plain { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

/// `value` as an SQL string literal.
pub(super) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Names as a comma-separated list of quoted identifiers (`GRANT … TO a, "B"`).
pub(super) fn ident_list(names: &[String]) -> String {
    names.iter().map(|n| quote_ident(n)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("app_proxy"), "app_proxy");
        assert_eq!(quote_ident("Admin"), "\"Admin\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(ident_list(&["a".into(), "B".into()]), "a, \"B\"");
    }
}
