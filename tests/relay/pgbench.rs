//! pgbench through the proxy: initialisation (DDL, COPY, VACUUM), then
//! read-only runs in the simple and the prepared query modes.

use crate::common::proxy::{self, base_config};
use crate::common::queries::{pgbench, pgbench_processed, pgbench_stdout as check};
use crate::common::{Postgres, postgres};

fn assert_ran_without_failures(what: &str, stdout: &str) {
    assert!(stdout.contains("number of failed transactions: 0 (0.000%)"), "{what}: {stdout}");
    let processed = pgbench_processed(stdout).unwrap_or_else(|| panic!("{what}: no transaction count in {stdout}"));
    assert!(processed > 0, "{what}: {stdout}");
}

#[tokio::test]
async fn pgbench_initialises_then_runs_simple_and_prepared() {
    let mut config = base_config(postgres());
    config.upstream.database = None;
    config.upstream.allowed_databases = vec![Postgres::BENCH_DB.into()];
    config.pool.size = 6;
    let proxy = proxy::start(config).await;

    let init = pgbench(&proxy, &["-i", "-s", "1", "-q"]).await;
    check("pgbench -i", &init);
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(stderr.contains("done in"), "pgbench -i: {stderr}");
    // The tables exist in the client's database, with pgbench's row counts.
    let su = postgres().superuser_client(Postgres::BENCH_DB).await;
    let accounts: i64 = su.query_one("SELECT count(*) FROM pgbench_accounts", &[]).await.unwrap().get(0);
    assert_eq!(accounts, 100_000);

    let simple = pgbench(&proxy, &["-S", "-T", "3", "-c", "4"]).await;
    assert_ran_without_failures("pgbench -S", &check("pgbench -S", &simple));
    let prepared = pgbench(&proxy, &["-M", "prepared", "-S", "-T", "3", "-c", "2"]).await;
    assert_ran_without_failures("pgbench -M prepared -S", &check("pgbench -M prepared -S", &prepared));
}
