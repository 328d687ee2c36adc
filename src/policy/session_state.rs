//! Statements that leave state on the server session beyond their transaction
//! (LISTEN, SQL PREPARE, session SET, temp tables not dropped at commit, WITH
//! HOLD cursors, session advisory locks, LOAD). Resets (RESET, DISCARD, UNLISTEN,
//! CLOSE, DEALLOCATE), which pools such as asyncpg's send on release, remove
//! state and do not pin. In transaction pooling such a client is pinned to its
//! server connection for the rest of its session, so the state stays where the
//! client expects it; another identity only ever gets that connection after a
//! reset. This is a lexical check: over-matching only pins, and state it misses
//! (created through a function or DO block) still never crosses identities.

use super::isolation::first_word;

/// True when `text` (lower case; one or more statements) may create session-lasting state.
pub fn creates_session_state(text: &str) -> bool {
    // Function calls with any spacing before the parenthesis; objects in the temp schema.
    let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ").replace(" (", "(");
    if ["pg_advisory_lock", "pg_try_advisory_lock", "set_config(", "pg_temp."].iter().any(|f| compact.contains(f)) {
        return true;
    }
    text.split(';').any(|statement| {
        let first = first_word(statement);
        let rest = statement.trim_start().get(first.len()..).unwrap_or("");
        match first {
            "listen" | "prepare" | "load" => true,
            "set" => !matches!(first_word(rest), "local" | "transaction" | "constraints"),
            "declare" => statement.contains("with hold"),
            "create" => {
                let temp = matches!(first_word(rest), "temp" | "temporary")
                    || rest.trim_start().starts_with("local temp")
                    || rest.trim_start().starts_with("global temp");
                temp && !statement.contains("on commit drop")
            }
            "select" | "with" | "values" | "table" => {
                statement.contains("into temp") || statement.contains("into temporary")
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    fn pins(sql: &[u8]) -> bool {
        crate::policy::SqlText::new(sql).creates_session_state()
    }

    #[test]
    fn recognises_session_state() {
        for sql in [
            "LISTEN jobs",
            "PREPARE q AS SELECT 1",
            "SET search_path = app",
            "set application_name to 'x'",
            "select 1; SET TimeZone = 'UTC'",
            "CREATE TEMP TABLE t (a int)",
            "create temporary table t (a int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT * INTO TEMP t FROM documents",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT set_config ('search_path', 'x', false)",
            "CREATE TABLE pg_temp.t (a int)",
        ] {
            assert!(pins(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT * FROM documents",
            "SET LOCAL statement_timeout = 1000",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "BEGIN; INSERT INTO t VALUES (1); COMMIT",
            "SELECT pg_advisory_xact_lock(1)",
            "CREATE TABLE t (a int)",
            "DECLARE c CURSOR FOR SELECT 1",
            "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
            "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
        ] {
            assert!(!pins(sql.as_bytes()), "{sql}");
        }
    }
}
