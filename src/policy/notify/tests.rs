use super::*;

fn scope() -> ChannelScope {
    ChannelScope::for_tenant("1")
}

/// The prefix of tenant "1": the first 16 hex digits of SHA-256("1").
const P1: &str = "6b86b273ff34fce1.";

fn rewrite(sql: &str) -> Result<Option<String>, ChannelError> {
    scope_channels(sql.as_bytes(), &scope(), false).map(|o| o.map(|b| String::from_utf8(b).unwrap()))
}

fn rewritten(sql: &str) -> String {
    rewrite(sql).unwrap().expect("rewritten")
}

#[test]
fn the_prefix_is_the_tenants_sha256_and_differs_between_tenants() {
    assert_eq!(scope().scoped("chan").unwrap(), format!("{P1}chan"));
    let other = ChannelScope::for_tenant("2").scoped("chan").unwrap();
    assert_eq!(other, "d4735e3a265e16ee.chan");
}

#[test]
fn statements_are_scoped_and_the_rest_kept_byte_for_byte() {
    assert_eq!(rewritten("LISTEN chan"), format!("LISTEN \"{P1}chan\""));
    assert_eq!(rewritten("listen Chan ;"), format!("listen \"{P1}chan\" ;"));
    assert_eq!(rewritten("UNLISTEN chan"), format!("UNLISTEN \"{P1}chan\""));
    assert_eq!(rewritten("NOTIFY \"Quoted \"\"Chan\", 'x'"), format!("NOTIFY \"{P1}Quoted \"\"Chan\", 'x'"));
    assert_eq!(
        rewritten("SELECT 1; /* c */ LISTEN a; notify b,'p'; UNLISTEN *"),
        format!("SELECT 1; /* c */ LISTEN \"{P1}a\"; notify \"{P1}b\",'p'; UNLISTEN *")
    );
    assert_eq!(rewritten("LISTEN U&\"d\\0061t\""), format!("LISTEN \"{P1}dat\""));
    // Unreserved keywords are channel names too.
    assert_eq!(rewritten("LISTEN name"), format!("LISTEN \"{P1}name\""));
}

#[test]
fn unlisten_all_and_texts_without_channels_are_left_alone() {
    assert_eq!(rewrite("UNLISTEN *").unwrap(), None);
    assert_eq!(rewrite("SELECT notify_count FROM listeners").unwrap(), None);
    assert_eq!(rewrite("SELECT 'listen', \"Notify\" FROM t").unwrap(), None);
    assert!(!may_name_channel(b"SELECT 1"));
    assert!(may_name_channel(b"select PG_NOTIFY('a','b')"));
    assert!(may_name_channel(b"select U&\"pg_notif\\0079\"('a','b')"));
    assert!(may_name_channel(b"CREATE OPERATOR ### (function = E'pg_notif\\x79', leftarg = text, rightarg = text)"));
}

#[test]
fn pg_notify_with_a_constant_channel_is_scoped() {
    assert_eq!(rewritten("SELECT pg_notify('chan', 'x')"), format!("SELECT pg_notify(E'{P1}chan', 'x')"));
    assert_eq!(
        rewritten("SELECT pg_catalog.pg_notify('it''s\\', $1)"),
        format!("SELECT pg_catalog.pg_notify(E'{P1}it''s\\\\', $1)")
    );
    assert_eq!(
        rewritten("SELECT pg_notify(U&'d!0061t' UESCAPE '!', 'x'), pg_notify('a'\n'b', 'y')"),
        format!("SELECT pg_notify(E'{P1}dat', 'x'), pg_notify(E'{P1}ab', 'y')")
    );
}

#[test]
fn pg_notify_with_any_other_channel_is_refused() {
    for sql in [
        "SELECT pg_notify($1, 'x')",
        "SELECT pg_notify('a' || 'b', 'x')",
        "SELECT pg_notify('chan'::text, 'x')",
        "SELECT pg_notify(NULL, 'x')",
        "SELECT pg_notify(c, 'x') FROM t",
        "SELECT public.pg_notify('chan', 'x')",
        "SELECT U&\"pg_notif\\0079\"(current_user, 'x')",
        "CREATE OPERATOR ### (function = pg_notify, leftarg = text, rightarg = text)",
        "SELECT 'pg_notify'::regproc",
        "SELECT E'pg_notif\\x79'::regproc",
        "CREATE OPERATOR ### (function = E'pg_notif\\x79', leftarg = text, rightarg = text)",
        "SELECT \"PG_NOTIFY\"($1, 'x')",
    ] {
        assert_eq!(rewrite(sql), Err(ChannelError::Computed), "{sql}");
    }
    // An exempt operator: left as it is, the rest still scoped.
    let out = scope_channels(b"SELECT pg_notify($1, 'x'); LISTEN a", &scope(), true).unwrap().unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("SELECT pg_notify($1, 'x'); LISTEN \"{P1}a\""));
}

#[test]
fn nested_statements_and_unparsable_text_are_refused() {
    assert_eq!(rewrite("CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY c"), Err(ChannelError::Nested));
    assert!(matches!(rewrite("LISTEN"), Err(ChannelError::Syntax(e)) if e.position == Some(7)));
}

#[test]
fn channels_that_no_longer_fit_are_refused_never_truncated() {
    let fits = "c".repeat(MAX_CHANNEL_BYTES);
    assert_eq!(rewritten(&format!("LISTEN {fits}")), format!("LISTEN \"{P1}{fits}\""));
    assert_eq!(format!("{P1}{fits}").len(), 63);
    let long = "c".repeat(MAX_CHANNEL_BYTES + 1);
    assert_eq!(rewrite(&format!("LISTEN {long}")), Err(ChannelError::TooLong(long.clone())));
    assert_eq!(rewrite(&format!("SELECT pg_notify('{long}', '')")), Err(ChannelError::TooLong(long)));
    // Multibyte: bytes count.
    let wide = "é".repeat(MAX_CHANNEL_BYTES / 2 + 1);
    assert!(matches!(rewrite(&format!("LISTEN \"{wide}\"")), Err(ChannelError::TooLong(_))));
}

#[test]
fn text_that_is_not_utf8_keeps_its_bytes_and_refuses_non_ascii_channels() {
    let sql = b"SELECT '\xe9'; LISTEN chan";
    let out = scope_channels(sql, &scope(), false).unwrap().unwrap();
    assert_eq!(out, [&b"SELECT '\xe9'; LISTEN \""[..], P1.as_bytes(), b"chan\""].concat());
    assert_eq!(scope_channels(b"LISTEN \"\xe9\"", &scope(), false), Err(ChannelError::NotUtf8));
}

#[test]
fn notifications_are_mapped_back_or_dropped() {
    let body = |channel: &[u8]| [&7u32.to_be_bytes()[..], channel, b"\0payload\0"].concat();
    let mapped = |body: &[u8]| {
        let mut out = BytesMut::from(&b"before"[..]);
        scope().append_for_client(body, &mut out).then(|| out[6..].to_vec())
    };
    let mine = mapped(&body(format!("{P1}chan").as_bytes())).unwrap();
    assert_eq!(mine, [&b"A"[..], &21u32.to_be_bytes(), &body(b"chan")].concat());
    assert_eq!(mapped(&body(b"chan")), None, "an unscoped channel");
    assert_eq!(mapped(&body(b"d4735e3a265e16ee.chan")), None, "tenant 2's");
    assert_eq!(mapped(b"\0\0"), None, "malformed");
    assert_eq!(mapped(&[&7u32.to_be_bytes()[..], P1.as_bytes()].concat()), None, "no terminator");
}

#[test]
fn query_and_parse_messages_get_the_new_text() {
    use crate::protocol::frontend::with_sql_text;
    let q = [&b"Q"[..], &11u32.to_be_bytes(), b"LISTEN\0"].concat();
    assert_eq!(
        &with_sql_text(&q, b"LISTEN \"x\"").unwrap()[..],
        [&b"Q"[..], &15u32.to_be_bytes(), b"LISTEN \"x\"\0"].concat()
    );
    let p = [&b"P"[..], &20u32.to_be_bytes(), b"s1\0LISTEN\0", &1u16.to_be_bytes(), &25u32.to_be_bytes()].concat();
    let want = [&b"P"[..], &22u32.to_be_bytes(), b"s1\0NOTIFY a\0", &1u16.to_be_bytes(), &25u32.to_be_bytes()].concat();
    assert_eq!(&with_sql_text(&p, b"NOTIFY a").unwrap()[..], want);
    assert_eq!(with_sql_text(b"B\0\0\0\x04", b"x"), None);
}

#[test]
fn pg_notify_is_found_wherever_a_function_may_be_called() {
    assert_eq!(rewritten("SELECT * FROM pg_notify('a', 'b')"), format!("SELECT * FROM pg_notify(E'{P1}a', 'b')"));
    assert_eq!(
        rewritten("COPY (SELECT pg_notify($$a$$, 'b')) TO STDOUT"),
        format!("COPY (SELECT pg_notify(E'{P1}a', 'b')) TO STDOUT")
    );
    assert_eq!(
        rewrite("WITH x AS (SELECT pg_notify(title, 'b') FROM documents) SELECT 1"),
        Err(ChannelError::Computed)
    );
}

#[test]
fn a_call_the_parser_shares_between_columns_is_scoped_once() {
    assert_eq!(
        rewritten("UPDATE t SET (a, b) = (SELECT pg_notify('chan', 'x'), 2)"),
        format!("UPDATE t SET (a, b) = (SELECT pg_notify(E'{P1}chan', 'x'), 2)")
    );
}
