//! PostgreSQL restarted under the proxy (`pg_ctl restart -m fast`, `-m immediate`), in both
//! pool modes: a statement in flight ends with the server's error, not a hang or half a
//! message; clients that come after are served at once, by the same proxy, on new server
//! connections only; `/readyz` says ready again as soon as the pool has served one.

use std::time::{Duration, Instant};

use rlsproxy::config::PoolMode;
use tokio_postgres::SimpleQueryMessage;

use crate::common::http::get;
use crate::common::postgres;
use crate::common::proxy::{self, db_error};

/// Every test here takes it for reading; a restart, for writing.
pub static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// An answer the test waits for at most.
const WITHIN: Duration = Duration::from_secs(15);

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT pg_backend_pid()", &[]).await.expect("backend pid").get(0)
}

async fn count(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    let rows = client.simple_query("SELECT count(*) FROM documents").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row"))
}

#[tokio::test]
async fn a_restarted_server_ends_in_flight_statements_and_the_pool_refills() {
    let _server = SERVER.write().await;
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        for how in ["fast", "immediate"] {
            let mut cfg = proxy::base_config(postgres());
            cfg.pool.mode = mode;
            cfg.admin.address = Some("127.0.0.1:0".parse().expect("addr"));
            let proxy = proxy::start(cfg).await;
            let admin = proxy.admin.expect("admin listener");
            let busy = proxy.connect(&proxy.token("1")).await;
            let idle = proxy.connect(&proxy.token("2")).await;
            let before = [backend_pid(&busy).await, backend_pid(&idle).await];
            let in_flight = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
            tokio::time::sleep(Duration::from_millis(300)).await;

            let started = Instant::now();
            tokio::task::spawn_blocking(move || postgres().restart(how)).await.expect("restart");
            let restarted = started.elapsed();
            let err = tokio::time::timeout(WITHIN, in_flight)
                .await
                .expect("the statement in flight ends")
                .expect("task")
                .expect_err("the server went away");
            eprintln!("[{mode:?} -m {how}] restarted in {restarted:?}; in flight: {:?}", db_error(&err));
            // A fast shutdown tells each backend's client; an immediate one just closes.
            let expected = match how {
                "fast" => ("57P01", "terminating connection due to administrator command"),
                _ => ("08006", "rlsproxy: the upstream server closed the connection"),
            };
            let got = db_error(&err);
            assert_eq!((got.0.as_str(), got.1.as_str()), expected, "[{mode:?} -m {how}]");

            // A client that comes now is served on a new server connection.
            let fresh = proxy.connect(&proxy.token("1")).await;
            assert_eq!(count(&fresh).await.expect("fresh client"), "3", "[{mode:?} -m {how}]");
            let pid = backend_pid(&fresh).await;
            assert!(!before.contains(&pid), "[{mode:?} -m {how}] server connection {pid} from before the restart");
            let ready = (200, "ready\n".to_string());
            assert_eq!(get(admin, "/readyz", None).await, ready, "[{mode:?} -m {how}]");

            // An idle client: in session mode its session was its server connection, which is
            // gone (as with PostgreSQL itself); in transaction mode it holds none, and goes on.
            let idle_result = count(&idle).await.map_err(|e| db_error(&e));
            eprintln!("[{mode:?} -m {how}] idle client: {idle_result:?}");
            let expected = match mode {
                PoolMode::Session => Err(("".to_string(), "connection closed".to_string())),
                PoolMode::Transaction => Ok("2".to_string()),
            };
            assert_eq!(idle_result, expected, "[{mode:?} -m {how}]");
            proxy.handle.shutdown();
        }
    }
}
