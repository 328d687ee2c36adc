//! Connection storms: thousands of connections at once, and handshakes held open by peers
//! that never finish them (slowloris). Past `listen.max_clients` a connection gets 53300 at
//! once; those accepted are served; a stalled handshake is closed by
//! `limits.handshake_timeout_ms` and stops counting.

use std::time::{Duration, Instant};

use rlsproxy::config::PoolMode;
use tokio::io::AsyncReadExt;

use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, TestProxy};
use crate::common::raw::{self, RawClient};
use crate::common::wire::Msgs;

const STORM: usize = 5000;
const MAX_CLIENTS: usize = 200;

/// Raises this process's open-file limit to what the storm needs (its clients and the
/// proxy's sockets are all in this process).
fn allow_files(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    assert!(limit.rlim_max >= needed, "the storm needs {needed} open files; the hard limit is {}", limit.rlim_max);
    limit.rlim_cur = limit.rlim_cur.max(needed);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// One storm client: logged in and holding its session (`Some`), or refused with this
/// SQLSTATE and message before authentication.
async fn storm_client(proxy: &TestProxy, token: &str) -> Result<RawClient, (String, String)> {
    let mut c = raw::connect(proxy.addr).await;
    c.timeout = Duration::from_secs(60);
    c.send_startup(&[("user", "alice"), ("database", "app")]).await;
    let (tag, body) = c.read_message().await;
    if tag == b'E' {
        let f = raw::error_fields(&body);
        return Err((f[&'C'].clone(), f[&'M'].clone()));
    }
    assert_eq!(tag, b'R', "authentication request");
    c.send_password(token).await;
    c.read_until_ready().await;
    c.send_query("SELECT count(*) FROM documents").await;
    let replies = c.read_until_ready().await;
    assert!(replies.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"3")), "an accepted client is served");
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_past_max_clients_gets_53300_and_the_accepted_are_served() {
    let _server = SERVER.read().await;
    allow_files(3 * STORM as u64);
    let mut cfg = proxy::base_config(postgres());
    cfg.listen.max_clients = MAX_CLIENTS;
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.acquire_timeout_ms = 30_000;
    let proxy = std::sync::Arc::new(proxy::start(cfg).await);
    let steady = proxy.connect(&proxy.token("2")).await;
    let token = proxy.token("1");

    let started = Instant::now();
    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            let (proxy, token) = (proxy.clone(), token.clone());
            tokio::spawn(async move { storm_client(&proxy, &token).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut refusals = std::collections::BTreeMap::new();
    for task in storm {
        match task.await.expect("storm client") {
            Ok(c) => held.push(c),
            Err(refusal) => *refusals.entry(refusal).or_insert(0) += 1,
        }
    }
    eprintln!("{STORM} connections in {:?}: {} served, refused {refusals:?}", started.elapsed(), held.len());
    // The steady client holds one place; every other place went to the storm.
    assert_eq!(held.len(), MAX_CLIENTS - 1);
    let expected = ("53300".to_string(), "sorry, too many clients already (rlsproxy listen.max_clients)".to_string());
    assert_eq!(refusals.into_iter().collect::<Vec<_>>(), [(expected, STORM - MAX_CLIENTS + 1)]);
    let count: i64 = steady.query_one("SELECT count(*) FROM documents", &[]).await.expect("steady client").get(0);
    assert_eq!(count, 2);

    // Their places are free again once they go.
    drop(held);
    let start = Instant::now();
    loop {
        match proxy.try_connect(&token).await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(5), "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stalled_handshakes_are_closed_and_stop_counting() {
    let _server = SERVER.read().await;
    let mut cfg = proxy::base_config(postgres());
    cfg.listen.max_clients = 20;
    cfg.limits.handshake_timeout_ms = 1000;
    let proxy = proxy::start(cfg).await;
    // Twenty peers: half send nothing, half half a startup packet.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut c = raw::connect(proxy.addr).await;
        if i % 2 == 1 {
            c.send_raw(&[0, 0, 0, 40, 0, 3, 0, 0]).await;
        }
        stalled.push(c.into_inner());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = proxy.try_connect(&proxy.token("1")).await.expect_err("all places are taken");
    assert_eq!(proxy::db_error(&err).0, "53300");

    // The handshake timeout closes each of them (end of stream, nothing sent)...
    let start = Instant::now();
    for mut tcp in stalled {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "a stalled handshake got {read:?}");
    }
    eprintln!("stalled handshakes closed after {:?}", start.elapsed());
    // ...and a real client is served again.
    let client = proxy.connect(&proxy.token("1")).await;
    let count: i64 = client.query_one("SELECT count(*) FROM documents", &[]).await.expect("served").get(0);
    assert_eq!(count, 3);
}

/// A Query message of about `len` bytes that answers with its own length, as raw bytes.
fn big_query(len: usize) -> Vec<u8> {
    Msgs::new().query(&format!("SELECT length('{}')", "x".repeat(len - 25))).bytes().to_vec()
}

/// Large messages received at once share `limits.max_buffered_bytes`: past it the session
/// whose message does not fit ends with 53200, the others go on, and the room comes back
/// when a message has arrived.
#[tokio::test]
async fn large_messages_at_once_share_the_buffer_budget() {
    let _server = SERVER.read().await;
    const MIB: usize = 1 << 20;
    let mut cfg = proxy::base_config(postgres());
    cfg.limits.max_message_bytes = 2 * MIB;
    cfg.limits.max_buffered_bytes = 3 * MIB;
    cfg.guard.max_statement_bytes = 4 * MIB;
    let proxy = proxy::start(cfg).await;
    let query = big_query(3 * MIB / 2);
    // Two messages of 1.5 MiB, each half sent: 3 MiB reserved.
    let mut halves = Vec::new();
    for tenant in ["1", "2"] {
        let (mut c, _) = raw::login(proxy.addr, &proxy.token(tenant), &[]).await;
        c.send_raw(&query[..MIB]).await;
        halves.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third does not fit.
    let (mut third, _) = raw::login(proxy.addr, &proxy.token("1"), &[]).await;
    third.send_raw(&query[..MIB]).await;
    let (tag, body) = third.read_message().await;
    assert_eq!(tag, b'E');
    let fields = raw::error_fields(&body);
    let expected = format!(
        "rlsproxy: too many large messages are being received at once: this one ({} bytes) would pass \
         limits.max_buffered_bytes (3145728)",
        query.len()
    );
    assert_eq!(
        (fields[&'S'].as_str(), fields[&'C'].as_str(), fields[&'M'].as_str()),
        ("FATAL", "53200", expected.as_str())
    );
    // The first two finish and are answered.
    for c in &mut halves {
        c.send_raw(&query[MIB..]).await;
        let replies = c.read_until_ready().await;
        let row = replies.iter().find(|(t, _)| *t == b'D').expect("a row");
        assert!(row.1.ends_with(format!("{}", 3 * MIB / 2 - 25).as_bytes()), "{row:?}");
    }
    // Their room is free again.
    let (mut again, _) = raw::login(proxy.addr, &proxy.token("2"), &[]).await;
    again.send_raw(&query).await;
    assert!(again.read_until_ready().await.iter().any(|(t, _)| *t == b'D'));
}
