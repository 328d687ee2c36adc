//! Security policy applied on top of the relay: what context is injected and
//! how, which statements need it in a transaction of its own, which ones pin a
//! client to its server connection, and whether the proxy's upstream role is
//! safe to use at all.

pub mod advisory;
mod calls;
pub mod context;
pub mod guard;
pub mod isolation;
pub mod notify;
pub mod rewrite;
pub mod session_state;
pub mod strict;
pub mod syntax;
pub mod upstream_role;
mod walk;

/// Statement and portal names the proxy owns; clients may not use them.
pub const RESERVED_PREFIX: &[u8] = b"rlsproxy_";

/// A statement's text lower-cased once, for the lexical checks the relay makes on it.
#[derive(Debug)]
pub struct SqlText(String);

impl SqlText {
    /// Lower-cases `sql` (invalid UTF-8 replaced; the guard refuses such text anyway).
    pub fn new(sql: &[u8]) -> Self {
        Self(String::from_utf8_lossy(sql).to_ascii_lowercase())
    }

    /// See [`isolation::needs_own_transaction`].
    pub fn needs_own_transaction(&self) -> bool {
        isolation::needs_own_transaction(&self.0)
    }

    /// See [`isolation::opens_block`].
    pub fn opens_block(&self) -> bool {
        isolation::opens_block(&self.0)
    }

    /// See [`session_state::creates_session_state`].
    pub fn creates_session_state(&self) -> bool {
        session_state::creates_session_state(&self.0)
    }

    /// The words `DISCARD`, `DEALLOCATE` or `RESET`: may drop the injection statement, the
    /// statements prepared on the connection and the settings (a column such as
    /// `password_reset_at` is no such word).
    pub fn resets_session(&self) -> bool {
        self.words().any(|w| matches!(w, "discard" | "deallocate" | "reset"))
    }

    /// `DEALLOCATE ALL` or `DISCARD ALL`: every prepared statement of the session is gone.
    pub fn drops_all_statements(&self) -> bool {
        let words: Vec<&str> = self.words().collect();
        words.windows(2).any(|w| matches!(w, ["deallocate" | "discard" | "prepare", "all"]))
    }

    /// The statement a Query of exactly one `DEALLOCATE [PREPARE] name` names (not `ALL`),
    /// as the server would read the name (folded unless quoted).
    pub fn deallocated_statement(&self, sql: &[u8]) -> Option<String> {
        use pg_query::protobuf::node::Node;
        if self.words().next() != Some("deallocate") {
            return None;
        }
        let parsed = pg_query::parse(std::str::from_utf8(sql).ok()?, 0).ok()?;
        let [stmt] = parsed.protobuf.stmts.as_slice() else { return None };
        match stmt.stmt.as_ref()?.node.as_ref()? {
            Node::DeallocateStmt(d) if !d.name.is_empty() => Some(d.name.clone()),
            _ => None,
        }
    }

    fn words(&self) -> impl Iterator<Item = &str> {
        self.0.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|w| !w.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::SqlText;

    #[test]
    fn a_lone_deallocate_names_its_statement_as_the_server_reads_it() {
        let named = |sql: &str| SqlText::new(sql.as_bytes()).deallocated_statement(sql.as_bytes());
        assert_eq!(named("DEALLOCATE s1").as_deref(), Some("s1"));
        assert_eq!(named("  deallocate PREPARE S1 ;").as_deref(), Some("s1"));
        assert_eq!(named("DEALLOCATE \"S1\"").as_deref(), Some("S1"));
        for sql in ["DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DEALLOCATE a; SELECT 1", "SELECT 1", "DEALLOCATE"] {
            assert_eq!(named(sql), None, "{sql}");
        }
    }

    #[test]
    fn resets_are_whole_words() {
        for sql in ["DISCARD ALL", "select 1;reset all", "DEALLOCATE p", "discard temp"] {
            assert!(SqlText::new(sql.as_bytes()).resets_session(), "{sql}");
        }
        for sql in ["SELECT password_reset_at FROM users", "SELECT discarded FROM t"] {
            assert!(!SqlText::new(sql.as_bytes()).resets_session(), "{sql}");
        }
    }
}
