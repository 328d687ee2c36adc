//! Resource edges of the relay (a client that never reads, a huge server error, a client
//! idle in a transaction with half a message sent) and the server-reported settings the
//! statement guard relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::raw;
use crate::common::{postgres, proxy};
use crate::desync::one_connection;
use crate::{Msgs, assert_closed, assert_serves, raw_login, raw_query, sev_code_msg, tags, the_error};

/// The proxy answers refused statements itself (transaction pooling, between transactions).
/// A client that floods it with them and never reads a reply must stop being read once its
/// replies pile up, instead of growing the proxy's buffer without bound.
#[tokio::test]
async fn a_client_that_never_reads_is_not_read_either() {
    let proxy = proxy::start(one_connection()).await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let refused = "SET app.current_tenant = '2'";
    let first = raw_query(&mut c, refused).await;
    assert_eq!((tags(&first).as_str(), the_error(&first)[&'C'].as_str()), ("EZ", "42501"));

    let chunk = Msgs::new().query(refused).bytes().repeat(2048);
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let flood = tokio::spawn(async move {
        while c.try_send_raw(&chunk).await.is_ok() {
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = written.load(Ordering::SeqCst);
    flood.abort();
    assert_eq!(
        after, before,
        "the proxy kept reading a client that reads none of its replies ({before} bytes, then {after})"
    );
    assert_serves(&proxy).await;
}

/// Server messages the proxy reads whole (an ErrorResponse here) are capped at
/// `limits.max_message_bytes`, like the client's: a bigger one ends the session with a clear
/// error instead of buffering up to a gigabyte.
#[tokio::test]
async fn a_huge_server_error_ends_the_session_instead_of_being_buffered() {
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.enabled = false;
    cfg.limits.max_message_bytes = 1 << 20;
    let proxy = proxy::start(cfg).await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    c.send_query("DO $$ BEGIN RAISE EXCEPTION '%', repeat('x', 2000000); END $$").await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag, b'E');
    let fields = raw::error_fields(&body);
    let (severity, code, message) = sev_code_msg(&fields);
    let head = &message[..message.len().min(200)];
    assert_eq!((severity, code), ("FATAL", "54000"), "{head}");
    assert!(
        message.starts_with("rlsproxy: the server sent a message 'E' of 20")
            && message.ends_with(" bytes, more than limits.max_message_bytes (1048576); the session ends"),
        "{head}"
    );
    assert_closed(&mut c).await;
    assert_serves(&proxy).await;
}

/// `pool.idle_transaction_timeout_s` also fires when the client sent part of a message and
/// stopped: a single byte must not hold a server connection forever.
#[tokio::test]
async fn idle_in_transaction_with_half_a_message_is_timed_out() {
    let mut cfg = one_connection();
    cfg.pool.idle_transaction_timeout_s = 1;
    let proxy = proxy::start(cfg).await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let begun = raw_query(&mut c, "BEGIN").await;
    assert_eq!(begun.last().map(|(t, b)| (*t, b.clone())), Some((b'Z', vec![b'T'])));
    c.send_raw(b"Q").await;
    let (tag, body) = c.try_read_message(Duration::from_secs(4)).await.expect("timed out").expect("a message");
    assert_eq!(tag, b'E');
    assert_eq!(
        sev_code_msg(&raw::error_fields(&body)),
        (
            "FATAL",
            "25P03",
            "terminating connection due to idle-in-transaction timeout (rlsproxy pool.idle_transaction_timeout_s)"
        )
    );
    assert_closed(&mut c).await;
    // The connection is free for another tenant.
    let other = proxy.connect(&proxy.token("2")).await;
    assert_eq!(crate::titles(&other).await, crate::GLOBEX);
}

/// The guard reads SQL with `standard_conforming_strings` on and a client encoding whose
/// characters never hide ASCII bytes. The server reports both however they change (here
/// `UPDATE pg_settings`, with the guard off so nothing else stops it): the proxy ends the
/// session at the report, and the connection is not used again.
#[tokio::test]
async fn a_reported_setting_that_breaks_the_guards_assumptions_ends_the_session() {
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.enabled = false;
    let proxy = proxy::start(cfg).await;
    for (name, value) in [("standard_conforming_strings", "off"), ("client_encoding", "SJIS")] {
        let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
        let update = format!("UPDATE pg_settings SET setting = '{value}' WHERE name = '{name}'");
        // Route 2 from the review, queued behind the setting change.
        let route = "SELECT 'x\\', ' ; SELECT title FROM documents WHERE tenant_id = 2; --'";
        c.send_msgs(&Msgs::new().query(&update).query(route)).await;
        let mut msgs = Vec::new();
        while let Ok(Some(msg)) = c.try_read_message(Duration::from_secs(5)).await {
            msgs.push(msg);
        }
        // `UPDATE pg_settings` answers with set_config's row; then the report, and nothing after it.
        assert!(!msgs.iter().any(|(t, _)| matches!(*t, b'Z' | b'S')), "{name}: {}", tags(&msgs));
        assert_eq!(crate::data_rows(&msgs), [[Some(value.to_string())]], "{name}");
        assert_eq!(
            sev_code_msg(&the_error(&msgs)),
            (
                "FATAL",
                "42501",
                format!(
                    "rlsproxy: the server reports {name} = {value}, which the statement guard cannot read \
                     SQL under; the session ends"
                )
                .as_str()
            ),
            "{name}"
        );
    }
    // New sessions get connections with the server's defaults.
    let c = proxy.connect(&proxy.token("1")).await;
    let scs: String = c.query_one("SHOW standard_conforming_strings", &[]).await.unwrap().get(0);
    assert_eq!(scs, "on");
    assert_eq!(crate::titles(&c).await, crate::ACME);
}

/// A server connection that would start with such a value (a database or role setting) is
/// refused before any client uses it: the upstream-role check names the setting (the
/// connection's own startup parameters pin the value, and its reported value is checked too).
#[tokio::test]
async fn a_server_connection_that_starts_with_an_unsafe_setting_is_refused() {
    let su = postgres().superuser_client("postgres").await;
    su.batch_execute("CREATE DATABASE sec_scs_off").await.unwrap();
    su.batch_execute("ALTER DATABASE sec_scs_off SET standard_conforming_strings = off").await.unwrap();
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.database = Some("sec_scs_off".into());
    let proxy = proxy::start(cfg).await;
    let (severity, code, message) = crate::refused(&proxy, &proxy.token("1")).await;
    assert_eq!(
        (severity.as_str(), code.as_str(), message.as_str()),
        (
            "FATAL",
            "08006",
            "rlsproxy: the upstream server is unavailable: unsafe upstream role: upstream.user app_proxy starts \
             every connection with settings (ALTER DATABASE sec_scs_off SET standard_conforming_strings=off): every \
             tenant shares this role, so such settings are one tenant's way to reach the others' sessions; remove \
             them (ALTER DATABASE sec_scs_off RESET standard_conforming_strings)"
        )
    );
}

/// The awaited set-up of a lent connection (here the reset and injection for another
/// tenant) is time-boxed by `upstream.connect_timeout_ms`: a backend that stopped answering
/// is closed, never lent, and the client is served by a fresh connection.
#[tokio::test]
async fn a_connection_that_hangs_in_its_set_up_is_closed_not_lent() {
    let mut cfg = one_connection();
    cfg.upstream.connect_timeout_ms = 1000;
    let proxy = proxy::start(cfg).await;
    // Simple protocol: nothing (such as a statement's Close) follows on its own.
    let (mut one, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let pid: i32 = crate::first_column(&raw_query(&mut one, "SELECT pg_backend_pid()").await)[0].parse().unwrap();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // Same startup parameters, so that the pool offers tenant 2 the stopped connection.
    let served = tokio::time::timeout(Duration::from_secs(8), async {
        let (mut two, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;
        let pid_two = crate::first_column(&raw_query(&mut two, "SELECT pg_backend_pid()").await)[0].clone();
        let titles = crate::first_column(&raw_query(&mut two, "SELECT title FROM documents ORDER BY id").await);
        (titles, pid_two.parse::<i32>().unwrap())
    })
    .await;
    signal("-CONT");
    let (titles, pid_two) = served.expect("tenant 2 waited for a stopped backend");
    assert_eq!(titles, crate::GLOBEX);
    assert_ne!(pid_two, pid, "the stopped backend was lent again");
}
