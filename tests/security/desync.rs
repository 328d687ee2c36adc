//! Replies always reach the client that asked: a COPY the server ends while the client is
//! still sending data, a client message half forwarded when a transaction ends, and a
//! client whose messages leave the server's position ambiguous. Transaction pooling, one
//! server connection, two tenants.

use std::time::Duration;

use rlsproxy::config::{Config, PoolMode};

use crate::common::raw::RawClient;
use crate::common::{postgres, proxy};
use crate::{GLOBEX, Msgs, data_rows, raw_login, raw_query, sev_code_msg, tags, the_error};

/// Transaction pooling with one server connection: every tenant's transactions share it.
pub fn one_connection() -> Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 1;
    cfg.pool.acquire_timeout_ms = 10_000;
    cfg
}

/// Every message until the peer closes (or nothing comes for `quiet`).
async fn read_to_end(c: &mut RawClient, quiet: Duration) -> Vec<(u8, Vec<u8>)> {
    let mut msgs = Vec::new();
    while let Ok(Some(msg)) = c.try_read_message(quiet).await {
        msgs.push(msg);
    }
    msgs
}

/// The route found in review: tenant 1's COPY fails on the server while tenant 1 goes on
/// sending (no CopyDone), plus Syncs and queries; tenant 2 borrows the connection next. The
/// proxy cannot know which of tenant 1's messages the server read in COPY mode, so it ends
/// tenant 1's session and closes that connection: tenant 2 gets exactly its own rows.
#[tokio::test]
async fn a_copy_the_server_ends_never_shifts_replies_to_another_tenant() {
    let proxy = proxy::start(one_connection()).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let (mut b, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;

    let mut attack = Msgs::new()
        .query("CREATE TEMP TABLE tt(a int) ON COMMIT DROP; COPY tt FROM STDIN")
        .copy_data(b"abc\n")
        .query("SELECT 1");
    for _ in 0..5 {
        attack = attack.sync();
    }
    for _ in 0..5 {
        attack = attack.query("SELECT pg_sleep(1), 'filler'");
    }
    a.send_msgs(&attack).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send_query("SELECT id, title, tenant_id FROM documents ORDER BY id").await;
    for sql in ["SELECT title, tenant_id FROM documents", "SELECT current_setting('app.current_tenant')"] {
        let _ = a.try_send_raw(Msgs::new().query(sql).bytes()).await;
    }

    let theirs = b.read_until_ready().await;
    let rows = data_rows(&theirs);
    let titles: Vec<_> = rows.iter().map(|r| r[1].clone().unwrap_or_default()).collect();
    assert_eq!(titles, GLOBEX, "tenant 2's own query: {}", tags(&theirs));
    assert!(rows.iter().all(|r| r[2].as_deref() == Some("2")), "{rows:?}");
    assert!(!theirs.iter().any(|(t, _)| *t == b'E'), "tenant 2 got an error: {}", tags(&theirs));

    let mine = read_to_end(&mut a, Duration::from_secs(5)).await;
    assert_eq!(data_rows(&mine), Vec::<Vec<Option<String>>>::new(), "tenant 1 got rows: {}", tags(&mine));
    assert_eq!(tags(&mine), "CE", "tenant 1's replies");
    assert_eq!(
        sev_code_msg(&the_error(&mine)),
        (
            "FATAL",
            "08P01",
            "rlsproxy: the client sent other messages after COPY data without ending the COPY \
             (CopyDone or CopyFail) first; which of them the server reads in COPY mode is unknowable, \
             so the session ends"
        )
    );
    // Tenant 2's session goes on, in its own context.
    let again = raw_query(&mut b, "SELECT current_setting('app.current_tenant')").await;
    assert_eq!(data_rows(&again), [[Some("2".to_string())]]);
}

/// A Sync inside COPY data is ignored by a server still copying, answered by one whose COPY a
/// bad row already ended: the proxy accepts it while the COPY succeeds (drivers' pipelines
/// may put one there) and ends the session when the COPY fails, before any reply can shift.
#[tokio::test]
async fn a_sync_inside_copy_data_is_in_step_when_the_copy_succeeds_and_fatal_when_it_fails() {
    let proxy = proxy::start(one_connection()).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let (mut b, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;
    let copy = |first: &[u8]| {
        Msgs::new()
            .query("CREATE TEMP TABLE tt(a int) ON COMMIT DROP; COPY tt FROM STDIN")
            .copy_data(first)
            .sync()
            .flush()
            .copy_data(b"2\n")
            .copy_done()
            .query("SELECT 'after'")
    };
    a.send_msgs(&copy(b"1\n")).await;
    let mut got = a.read_until_ready().await;
    got.extend(a.read_until_ready().await);
    assert_eq!(tags(&got), "CGCZTDCZ");
    assert_eq!(crate::first_column(&got), ["after"]);

    let mut attack = copy(b"abc\n");
    for _ in 0..3 {
        attack = attack.query("SELECT pg_sleep(0.5), 'filler'");
    }
    a.send_msgs(&attack).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let theirs = raw_query(&mut b, "SELECT id, title, tenant_id FROM documents ORDER BY id").await;
    let rows = data_rows(&theirs);
    assert_eq!(rows.iter().map(|r| r[1].clone().unwrap_or_default()).collect::<Vec<_>>(), GLOBEX);
    assert!(rows.iter().all(|r| r[2].as_deref() == Some("2")), "{rows:?}");
    let mine = read_to_end(&mut a, Duration::from_secs(5)).await;
    assert_eq!(tags(&mine), "CGE", "tenant 1's replies");
    assert_eq!(sev_code_msg(&the_error(&mine)).1, "08P01");
    let again = raw_query(&mut b, "SELECT current_setting('app.current_tenant')").await;
    assert_eq!(data_rows(&again), [[Some("2".to_string())]]);
}

/// A COPY the server fails is over once the client has seen its error: what the client sends
/// after that (no CopyDone, as libpq does, then a query) is answered normally, on the same
/// connection, and the next tenant's transaction is its own.
#[tokio::test]
async fn after_a_failed_copy_the_client_goes_on_without_copydone() {
    let proxy = proxy::start(one_connection()).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let (mut b, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;
    let copy = Msgs::new().query("CREATE TEMP TABLE tt(a int) ON COMMIT DROP; COPY tt FROM STDIN");
    a.send_msgs(&copy.copy_data(b"abc\n")).await;
    let failed = a.read_until_ready().await;
    assert_eq!(tags(&failed), "CGEZ");
    assert_eq!(the_error(&failed)[&'C'], "22P02");
    // Its transaction is over: the connection is free for the other tenant meanwhile.
    let theirs = raw_query(&mut b, "SELECT title FROM documents ORDER BY id").await;
    assert_eq!(crate::first_column(&theirs), GLOBEX);
    // Late data and a Sync, then a query: the server ignores the data and answers the rest.
    a.send_msgs(&Msgs::new().copy_data(b"1\n").sync()).await;
    assert_eq!(tags(&a.read_until_ready().await), "Z");
    let mine = raw_query(&mut a, "SELECT current_setting('app.current_tenant')").await;
    assert_eq!(data_rows(&mine), [[Some("1".to_string())]]);
    let theirs = raw_query(&mut b, "SELECT current_setting('app.current_tenant')").await;
    assert_eq!(data_rows(&theirs), [[Some("2".to_string())]]);
}

/// Messages pipelined behind a COPY with a CopyDone before them are unambiguous: the COPY
/// ends at the CopyDone (or earlier, at a bad row), whichever way the data goes.
#[tokio::test]
async fn a_pipelined_copy_with_copydone_keeps_every_reply_in_step() {
    let proxy = proxy::start(one_connection()).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let copy = "CREATE TEMP TABLE tt(a int) ON COMMIT DROP; COPY tt FROM STDIN";
    for (data, expected) in [(&b"1\n2\n"[..], "CGCZTDCZ"), (&b"abc\n"[..], "CGEZTDCZ")] {
        a.send_msgs(&Msgs::new().query(copy).copy_data(data).copy_done().query("SELECT 'after'")).await;
        let mut got = a.read_until_ready().await;
        got.extend(a.read_until_ready().await);
        assert_eq!(tags(&got), expected);
        assert_eq!(crate::first_column(&got), ["after"]);
    }
}

/// A CopyData longer than what has arrived is forwarded as it comes. If the client stalls
/// mid-message when its transaction is over, the connection must not serve anyone else:
/// the next borrower's bytes would complete the message (here: its `DISCARD ALL`).
#[tokio::test]
async fn a_half_forwarded_message_keeps_the_connection_from_the_next_tenant() {
    let proxy = proxy::start(one_connection()).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    // Tenant 1 stops 17 bytes short of the end of its CopyData.
    let copy_data = Msgs::new().copy_data(&vec![b'x'; 65_553 - 5]);
    let (head, tail) = copy_data.bytes().split_at(copy_data.bytes().len() - 17);
    a.send_msgs(&Msgs::new().query("SELECT 1").raw(head)).await;
    assert_eq!(tags(&a.read_until_ready().await), "TDCZ");

    let theirs = async {
        let b = proxy.connect(&proxy.token("2")).await;
        crate::titles(&b).await
    };
    let answered = tokio::time::timeout(Duration::from_secs(5), theirs).await;
    assert_eq!(answered.expect("tenant 2 was not served"), GLOBEX);
    // Tenant 1 finishes its message (which nobody reads) and goes on normally.
    a.send_raw(tail).await;
    let mine = raw_query(&mut a, "SELECT current_setting('app.current_tenant')").await;
    assert_eq!(data_rows(&mine), [[Some("1".to_string())]]);
}

/// libpq (psql's `\copy`), a bad row at the start of a large input: psql stops sending data
/// once it sees the error (no CopyDone) and goes on with its next command, in step.
#[tokio::test]
async fn psql_copy_with_a_bad_row_then_a_query_stays_in_step() {
    let proxy = proxy::start(one_connection()).await;
    let data = std::env::temp_dir().join(format!("rlsproxy-desync-{}.tsv", std::process::id()));
    let mut rows = String::from("abc\n");
    rows.push_str(&"1\n".repeat(300_000));
    std::fs::write(&data, rows).unwrap();
    let script = data.with_extension("sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TEMP TABLE sec_psql_copy (a int);\n\\copy sec_psql_copy FROM '{}'\n\
             SELECT 'after', count(*), current_setting('app.current_tenant') FROM sec_psql_copy;\n",
            data.display()
        ),
    )
    .unwrap();
    let conninfo = proxy.conninfo(&proxy.token("1"));
    let file = script.clone();
    let out = tokio::task::spawn_blocking(move || {
        // Going on after an error, as psql does by default.
        let mut psql = postgres().psql();
        psql.arg(conninfo).args(["-At", "-v", "ON_ERROR_STOP=0", "-f"]).arg(file).output().expect("run psql")
    })
    .await
    .unwrap();
    std::fs::remove_file(&script).unwrap();
    std::fs::remove_file(&data).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid input syntax for type integer: \"abc\""), "{stderr}");
    assert!(!stderr.contains("08P01") && !stderr.contains("FATAL"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after|0|1\n", "{stderr}");
    let other = proxy.connect(&proxy.token("2")).await;
    assert_eq!(crate::titles(&other).await, GLOBEX);
}
