//! Load through a transaction-mode proxy with 4 server connections: pgbench
//! (prepared read-only and the default TPC-B-like script), and 200 clients of
//! 21 tenants that must each see only their own rows.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use crate::common::Postgres;
use crate::common::proxy::{self, TestProxy};
use crate::common::queries::{pgbench, pgbench_processed, pgbench_stdout};
use crate::{superuser, tx_config};

const SIZE: usize = 4;

/// pgbench's stdout, after checking it exited 0 with no failed transaction and some processed.
fn check(what: &str, out: &Output) -> String {
    let stdout = pgbench_stdout(what, out);
    if what.contains("-i") {
        return stdout;
    }
    let failed = stdout.lines().find_map(|l| l.strip_prefix("number of failed transactions: "));
    let failed = failed.and_then(|f| f.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok());
    assert_eq!(failed, Some(0), "{what}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(pgbench_processed(&stdout).is_some_and(|n| n > 0), "{what}: {stdout}");
    stdout
}

/// Samples the pool and the upstream backends of database bench every 20 ms until `stop`;
/// returns the largest (open connections, upstream backends) seen.
fn watch(proxy: &TestProxy, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, i64)> {
    let pool = proxy.pool.clone();
    tokio::spawn(async move {
        let su = superuser().await;
        let (mut open, mut backends) = (0, 0);
        while !stop.load(Ordering::SeqCst) {
            open = open.max(pool.stats().0);
            let n: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND usename = 'app_proxy'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            backends = backends.max(n);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (open, backends)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_and_tpcb_through_transaction_pooling() {
    let mut cfg = tx_config(SIZE);
    cfg.upstream.database = Some(Postgres::BENCH_DB.into());
    cfg.pool.acquire_timeout_ms = 30_000;
    let proxy = proxy::start(cfg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(&proxy, stop.clone());

    check("pgbench -i", &pgbench(&proxy, &["-i", "-s", "1", "-q"]).await);
    let prepared = ["-M", "prepared", "-c", "16", "-j", "2", "-T", "5", "-S"];
    check("pgbench -M prepared -S", &pgbench(&proxy, &prepared).await);
    check("pgbench tpcb-like", &pgbench(&proxy, &["-c", "8", "-j", "2", "-T", "5"]).await);

    stop.store(true, Ordering::SeqCst);
    let (open, backends) = watcher.await.unwrap();
    assert!(open <= SIZE, "pool stats showed {open} open connections");
    assert!(backends <= SIZE as i64, "{backends} upstream backends for database bench");
    assert!(proxy.pool.stats().0 <= SIZE);
}

const TENANTS: std::ops::RangeInclusive<i32> = 100..=120;
const ROWS_PER_TENANT: i64 = 3;

async fn create_items() {
    let su = superuser().await;
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS tx_load_items (tenant_id int NOT NULL, v int NOT NULL);
         ALTER TABLE tx_load_items ENABLE ROW LEVEL SECURITY;
         ALTER TABLE tx_load_items FORCE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS tx_load_tenant ON tx_load_items;
         CREATE POLICY tx_load_tenant ON tx_load_items
             USING (tenant_id = current_setting('app.current_tenant')::integer);
         GRANT SELECT ON tx_load_items TO app_proxy;
         DELETE FROM tx_load_items;
         INSERT INTO tx_load_items SELECT t, t * 10 + i FROM generate_series(100, 120) t, generate_series(1, 3) i;",
    )
    .await
    .unwrap();
}

/// The problems one client found: foreign rows seen and errors.
#[derive(Default)]
struct Findings {
    foreign: usize,
    errors: Vec<String>,
}

fn check_rows(tenant: i32, rows: &[(i32, i32)], what: &str, found: &mut Findings) {
    found.foreign += rows.iter().filter(|(t, v)| *t != tenant || v / 10 != tenant).count();
    if rows.len() as i64 != ROWS_PER_TENANT {
        found.errors.push(format!("tenant {tenant}, {what}: {} rows {rows:?}", rows.len()));
    }
}

async fn one_client(client: Client, tenant: i32, found: &mut Findings) -> Result<(), tokio_postgres::Error> {
    for round in 0..4 {
        // Simple protocol.
        let mut rows = Vec::new();
        for m in client.simple_query("SELECT tenant_id, v FROM tx_load_items").await? {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                rows.push((r.get(0).unwrap().parse().unwrap(), r.get(1).unwrap().parse().unwrap()));
            }
        }
        check_rows(tenant, &rows, &format!("simple, round {round}"), found);
        // Extended protocol, unnamed and named statements.
        let got = client.query("SELECT tenant_id, v FROM tx_load_items WHERE v > $1", &[&0i32]).await?;
        let rows: Vec<(i32, i32)> = got.iter().map(|r| (r.get(0), r.get(1))).collect();
        check_rows(tenant, &rows, &format!("extended, round {round}"), found);
        // An explicit block with several statements.
        client.batch_execute("BEGIN").await?;
        let seen: String = client.query_one("SELECT current_setting('app.current_tenant')", &[]).await?.get(0);
        if seen != tenant.to_string() {
            found.foreign += 1;
        }
        let got = client.query("SELECT tenant_id, v FROM tx_load_items ORDER BY v", &[]).await?;
        let rows: Vec<(i32, i32)> = got.iter().map(|r| (r.get(0), r.get(1))).collect();
        check_rows(tenant, &rows, &format!("block, round {round}"), found);
        client.batch_execute("COMMIT").await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_of_21_tenants_over_4_connections_see_only_their_rows() {
    const CLIENTS: usize = 210;
    create_items().await;
    let mut cfg = tx_config(SIZE);
    cfg.pool.acquire_timeout_ms = 60_000;
    cfg.pool.max_waiting_clients = 1_000;
    let proxy = Arc::new(proxy::start(cfg).await);
    let max_open = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let tenant = TENANTS.start() + (i as i32 % (TENANTS.end() - TENANTS.start() + 1));
        let proxy = proxy.clone();
        let max_open = max_open.clone();
        tasks.push(tokio::spawn(async move {
            let mut found = Findings::default();
            let result = async {
                let client = match proxy.try_connect(&proxy.token(&tenant.to_string())).await {
                    Ok(client) => client,
                    Err(e) => return Err(e),
                };
                max_open.fetch_max(proxy.pool.stats().0, Ordering::SeqCst);
                one_client(client, tenant, &mut found).await
            }
            .await;
            if let Err(e) = result {
                found.errors.push(format!("tenant {tenant}: {e} {:?}", proxy::db_error(&e)));
            }
            max_open.fetch_max(proxy.pool.stats().0, Ordering::SeqCst);
            found
        }));
    }
    let (mut foreign, mut errors) = (0, Vec::new());
    for task in tasks {
        let found = task.await.unwrap();
        foreign += found.foreign;
        errors.extend(found.errors);
    }
    assert_eq!(foreign, 0, "foreign rows or contexts seen");
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(max_open.load(Ordering::SeqCst) <= SIZE);
    assert!(proxy.pool.stats().0 <= SIZE, "{:?}", proxy.pool.stats());
}
