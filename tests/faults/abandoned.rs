//! Clients that go away at the worst moment (their process killed: the kernel closes the
//! socket): in the middle of `COPY … FROM STDIN`, of an extended-protocol batch before its
//! Sync, of a transaction holding a row lock. Nothing they sent is committed, what they held
//! is released, and the next borrower of their server connection (the only one: `size = 1`)
//! finds it clean.

use std::time::{Duration, Instant};

use rlsproxy::config::PoolMode;

use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, TestProxy};
use crate::common::raw;
use crate::common::wire::Msgs;

/// What each abandoned client does before it goes, and the title its row would have.
const CASES: [(&str, &str); 3] = [
    ("mid-COPY", "abandoned copy"),
    ("mid-batch before Sync", "abandoned batch"),
    ("mid-transaction with a row lock", "abandoned block"),
];

async fn abandon(proxy: &TestProxy, case: &str, title: &str) {
    let (mut c, _) = raw::login(proxy.addr, &proxy.token("1"), &[]).await;
    match case {
        "mid-COPY" => {
            // COPY FROM is refused on tables with row-level security: a plain one.
            c.send_query("COPY fault_copies (title) FROM STDIN").await;
            let (tag, body) = c.read_message().await;
            assert_eq!(tag, b'G', "CopyInResponse, not {:?}", raw::error_fields(&body));
            c.send_msgs(&Msgs::new().copy_data(format!("{title}\n").as_bytes())).await;
        }
        "mid-batch before Sync" => {
            let insert = format!("INSERT INTO documents (tenant_id, title, body) VALUES (1, '{title}', 'x')");
            c.send_msgs(&Msgs::new().unsynced(&insert, &[])).await;
        }
        _ => {
            c.send_query(&format!(
                "BEGIN; INSERT INTO documents (tenant_id, title, body) VALUES (1, '{title}', 'x'); \
                 SELECT id FROM documents WHERE id = 1 FOR UPDATE"
            ))
            .await;
            let replies = c.read_until_ready().await;
            assert_eq!(replies.last().map(|(_, b)| b.clone()), Some(b"T".to_vec()), "in a transaction block");
        }
    }
    // Whatever was sent has reached the server before the client goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
}

#[tokio::test]
async fn an_abandoned_client_commits_nothing_holds_nothing_and_leaves_a_clean_connection() {
    let _server = SERVER.read().await;
    let admin = postgres().superuser_client("app").await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fault_copies (title text); \
             GRANT SELECT, INSERT ON fault_copies TO app_proxy",
        )
        .await
        .expect("fault_copies");
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        cfg.pool.size = 1;
        let proxy = proxy::start(cfg).await;
        for (case, title) in CASES {
            abandon(&proxy, case, title).await;

            // The row lock goes with the client's transaction, within a bound.
            let started = Instant::now();
            while admin.simple_query("SELECT id FROM documents WHERE id = 1 FOR UPDATE NOWAIT").await.is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "[{mode:?}] {case}: row 1 still locked");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let committed: i64 = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM documents WHERE title = $1) \
                          + (SELECT count(*) FROM fault_copies WHERE title = $1)",
                    &[&title],
                )
                .await
                .expect("count")
                .get(0);
            assert_eq!(committed, 0, "[{mode:?}] {case}: the abandoned client's row was committed");

            // The next borrower of the only server connection: its own context, no transaction
            // left open, its own rows.
            let next = proxy.connect(&proxy.token("2")).await;
            let row = next
                .query_one(
                    "SELECT current_setting('app.current_tenant'), \
                            pg_current_xact_id_if_assigned() IS NULL AS fresh_transaction, \
                            (SELECT string_agg(title, ',' ORDER BY id) FROM documents)",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("[{mode:?}] {case}: next borrower: {e}"));
            let seen: (String, bool, String) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                seen,
                ("2".into(), true, "globex merger plan,globex handbook".into()),
                "[{mode:?}] {case}: the next borrower"
            );
        }
        proxy.handle.shutdown();
    }
}
