use super::*;

/// Hex SHA-256 of tenant "1".
const T1: &str = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";

fn rewrite(sql: &str) -> Result<Option<String>, LockKeyError> {
    scope_lock_keys(sql.as_bytes(), &LockScope::for_tenant("1")).map(|o| o.map(|b| String::from_utf8(b).unwrap()))
}

fn rewritten(sql: &str) -> String {
    rewrite(sql).unwrap().expect("rewritten")
}

/// The scoped one-key form of the key expression `k`.
fn one(k: &str) -> String {
    format!("{HASH_OPEN}'{T1}:k:'{CONCAT}(({k})::pg_catalog.int8)::pg_catalog.text{HASH_CLOSE}")
}

/// The scoped two-key form of `a` and `b` (`gap`: what stood between `a` and the comma).
fn pair(a: &str, gap: &str, b: &str) -> String {
    format!(
        "{HASH_OPEN}'{T1}:p:'{CONCAT}(({a}{gap})::pg_catalog.int4)::pg_catalog.text{CONCAT}','{CONCAT}\
         (({b})::pg_catalog.int4)::pg_catalog.text{HASH_CLOSE}"
    )
}

#[test]
fn one_key_calls_get_the_tenants_key_and_the_rest_is_kept_byte_for_byte() {
    assert_eq!(rewritten("SELECT pg_advisory_lock(777001)"), format!("SELECT pg_advisory_lock({})", one("777001")));
    assert_eq!(
        rewritten("select PG_TRY_ADVISORY_LOCK ( $1 ) /* c */ ;"),
        format!("select PG_TRY_ADVISORY_LOCK ( {} ) /* c */ ;", one("$1"))
    );
    assert_eq!(
        rewritten("SELECT pg_catalog.\"pg_advisory_xact_lock\"(hashtext(name)::int8 + 1) FROM t"),
        format!("SELECT pg_catalog.\"pg_advisory_xact_lock\"({}) FROM t", one("hashtext(name)::int8 + 1"))
    );
    assert_eq!(
        rewritten("SELECT 1; SELECT pg_advisory_unlock(f(a, b)), pg_advisory_unlock_shared((ARRAY[1,2])[1])"),
        format!(
            "SELECT 1; SELECT pg_advisory_unlock({}), pg_advisory_unlock_shared({})",
            one("f(a, b)"),
            one("(ARRAY[1,2])[1]")
        )
    );
}

#[test]
fn two_key_calls_get_a_key_of_their_own_form() {
    assert_eq!(rewritten("SELECT pg_advisory_lock(1, 2)"), format!("SELECT pg_advisory_lock({})", pair("1", "", " 2")));
    assert_eq!(
        rewritten("SELECT pg_try_advisory_xact_lock_shared($1 -- a\n, $2)"),
        format!("SELECT pg_try_advisory_xact_lock_shared({})", pair("$1", " -- a\n", " $2"))
    );
}

#[test]
fn every_lock_function_is_scoped_and_unlock_all_is_left_alone() {
    for f in FUNCTIONS {
        assert_eq!(rewritten(&format!("SELECT {f}(5)")), format!("SELECT {f}({})", one("5")), "{f}");
        assert_eq!(rewritten(&format!("SELECT {f}(5,6)")), format!("SELECT {f}({})", pair("5", "", "6")), "{f}");
    }
    assert_eq!(rewrite("SELECT pg_advisory_unlock_all()").unwrap(), None);
    assert_eq!(rewrite("SELECT advisory FROM locks WHERE note = 'advisory'").unwrap(), None);
    assert!(!may_name_lock_function(b"SELECT 1 FROM documents"));
    assert!(may_name_lock_function(b"select PG_ADVISORY_LOCK(1)"));
    assert!(may_name_lock_function(b"select U&\"pg_\\0061dvisory_lock\"(1)"));
    assert!(may_name_lock_function(b"select E'pg_\\x61dvisory_lock'::regproc"));
}

#[test]
fn nested_calls_are_scoped_inside_out() {
    assert_eq!(
        rewritten("SELECT pg_advisory_lock(pg_try_advisory_lock(1)::int)"),
        format!("SELECT pg_advisory_lock({})", one(&format!("pg_try_advisory_lock({})::int", one("1"))))
    );
}

#[test]
fn uses_the_proxy_cannot_scope_are_refused() {
    for sql in [
        "SELECT public.pg_advisory_lock(1)",
        "SELECT x.pg_catalog.pg_advisory_lock(1)",
        "SELECT pg_advisory_lock()",
        "SELECT pg_advisory_lock(1, 2, 3)",
        "SELECT pg_advisory_lock(VARIADIC ARRAY[1])",
        "SELECT pg_advisory_lock(key => 1)",
        "SELECT pg_advisory_lock(1) OVER ()",
        "SELECT 'pg_advisory_lock'::regproc",
        "SELECT E'pg_\\x61dvisory_lock'::regproc",
        "SELECT U&\"pg_\\0061dvisory_lock\"::text",
        "CREATE OPERATOR ### (function = pg_try_advisory_lock, rightarg = bigint)",
        "CREATE OPERATOR ### (function = E'pg_try_\\x61dvisory_lock', rightarg = bigint)",
        "CREATE AGGREGATE a (bigint) (sfunc = pg_advisory_unlock, stype = bool)",
    ] {
        assert_eq!(rewrite(sql), Err(LockKeyError::Unscopable), "{sql}");
    }
    assert!(matches!(rewrite("SELECT pg_advisory_lock("), Err(LockKeyError::Syntax(_))));
}

#[test]
fn text_that_is_not_utf8_keeps_its_bytes() {
    let sql = b"SELECT pg_advisory_lock(length('\xe9'))";
    let out = scope_lock_keys(sql, &LockScope::for_tenant("1")).unwrap().unwrap();
    let want = format!("SELECT pg_advisory_lock({})", one("length('\u{0}')"));
    let (head, tail) = want.split_once('\u{0}').unwrap();
    assert_eq!(out, [head.as_bytes(), b"\xe9", tail.as_bytes()].concat());
}

#[test]
fn the_tenants_hash_and_the_oids_are_the_servers() {
    assert_eq!(LockScope::for_tenant("1").tenant_hex, T1);
    assert!(is_lock_function_oid(2880) && is_lock_function_oid(2891) && is_lock_function_oid(3096));
    assert!(!is_lock_function_oid(2892), "pg_advisory_unlock_all");
}

#[test]
fn a_syntax_error_is_answered_as_postgresql_answers_it() {
    let Err(LockKeyError::Syntax(e)) = rewrite("SELECT pg_advisory_lock(1) FROM WHERE") else {
        panic!("not a syntax error")
    };
    assert_eq!((e.message.as_str(), e.position), ("syntax error at or near \"WHERE\"", Some(33)));
}

#[test]
fn a_call_the_parser_shares_between_columns_is_scoped_once() {
    // `SET (a, b) = ROW(…)` puts the same source node under both columns: one call, one key.
    assert_eq!(
        rewritten("UPDATE t SET (a, b) = ROW(pg_advisory_lock(1), 2)"),
        format!("UPDATE t SET (a, b) = ROW(pg_advisory_lock({}), 2)", one("1"))
    );
    assert_eq!(
        rewritten("UPDATE t SET (a, b, c) = (SELECT pg_advisory_lock(1, 2), 2, 3)"),
        format!("UPDATE t SET (a, b, c) = (SELECT pg_advisory_lock({}), 2, 3)", pair("1", "", " 2"))
    );
}
