//! Long pipelines that fail part-way, in both pool modes: what asyncpg's `executemany`
//! sends (one Parse, many Bind/Execute with large parameters, written with flow control;
//! on the first error the client stops writing and sends its Sync).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rlsproxy::config::PoolMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;

use super::{Msgs, RawSession, Reply};
use crate::common::{postgres, proxy};

/// Pairs written before the client waits for the server's verdict (512 KiB of parameters:
/// more than the socket buffers and the proxy's high-water mark together).
const PAIRS_BEFORE_PAUSE: usize = 16;
const PARAMETER_BYTES: usize = 32 * 1024;

async fn read_one(rd: &mut OwnedReadHalf) -> (u8, Vec<u8>) {
    let read = async {
        let mut header = [0u8; 5];
        rd.read_exact(&mut header).await?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
        rd.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>((header[0], body))
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("a reply in time").expect("read")
}

/// Row 2 repeats row 1's key: the server fails the second Execute and skips the rest; the
/// client, writing while it reads, stops and sends Sync. The client gets exactly what
/// PostgreSQL sends, its connection stays usable, and nothing was inserted.
async fn executemany_with_a_unique_violation_at_row_2(mode: PoolMode, first_id: i64, pause: bool) {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    let proxy = proxy::start(cfg).await;
    let session = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let (mut rd, mut wr) = session.conn.into_inner().into_split();
    let failed = Arc::new(Notify::new());
    let seen = Arc::new(AtomicBool::new(false));

    let writer = tokio::spawn({
        let (failed, seen) = (failed.clone(), seen.clone());
        async move {
            let sql = "INSERT INTO documents (id, tenant_id, title, body) VALUES ($1, 1, 'many', $2)";
            wr.write_all(Msgs::new().parse("many", sql, &[]).bytes()).await.expect("write Parse");
            let body = "x".repeat(PARAMETER_BYTES);
            for row in 0..128i64 {
                if pause && row as usize == PAIRS_BEFORE_PAUSE {
                    // Flow control: the client waits, and learns of the error meanwhile.
                    failed.notified().await;
                    break;
                }
                if seen.load(Ordering::Relaxed) {
                    break;
                }
                let id = (first_id + row - i64::from(row >= 1)).to_string();
                let pair = Msgs::new().bind_text("", "many", &[&id, &body]).execute("", 0);
                wr.write_all(pair.bytes()).await.expect("write Bind/Execute");
            }
            wr.write_all(Msgs::new().sync().bytes()).await.expect("write Sync");
            wr
        }
    });
    let mut replies = Vec::new();
    loop {
        let msg = read_one(&mut rd).await;
        if msg.0 == b'E' {
            seen.store(true, Ordering::Relaxed);
            failed.notify_one();
        }
        let done = msg.0 == b'Z';
        replies.push(msg);
        if done {
            break;
        }
    }
    let reply = Reply::from(replies);
    assert_eq!(reply.sequence, "1 2 C 2 E Z", "{reply:?}");
    assert_eq!(reply.error(), ("23505", "duplicate key value violates unique constraint \"documents_pkey\""));
    assert_eq!(reply.status, 'I');

    let mut wr = writer.await.expect("writer");
    let count = format!("SELECT count(*), current_setting('app.current_tenant') FROM documents WHERE id >= {first_id}");
    wr.write_all(Msgs::new().query(&count).bytes()).await.expect("write Query");
    let mut replies = Vec::new();
    loop {
        let msg = read_one(&mut rd).await;
        let done = msg.0 == b'Z';
        replies.push(msg);
        if done {
            break;
        }
    }
    let after = Reply::from(replies);
    assert_eq!(after.sequence, "T D C Z", "{after:?}");
    assert_eq!(after.texts(), [["0", "1"]]);
}

#[tokio::test]
async fn executemany_failing_at_row_2_session_mode() {
    executemany_with_a_unique_violation_at_row_2(PoolMode::Session, 7_100_000, true).await;
    executemany_with_a_unique_violation_at_row_2(PoolMode::Session, 7_100_000, false).await;
}

#[tokio::test]
async fn executemany_failing_at_row_2_transaction_mode() {
    executemany_with_a_unique_violation_at_row_2(PoolMode::Transaction, 7_200_000, true).await;
    executemany_with_a_unique_violation_at_row_2(PoolMode::Transaction, 7_200_000, false).await;
}
