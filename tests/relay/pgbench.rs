//! pgbench through the proxy: initialisation (DDL, COPY, VACUUM), then
//! read-only runs in the simple and the prepared query modes.

use std::process::Output;

use crate::common::proxy::{self, TestProxy, base_config};
use crate::common::{Postgres, postgres};

/// Runs pgbench against database bench through `proxy` with `args`.
async fn pgbench(proxy: &TestProxy, args: &[&str]) -> Output {
    let mut cmd = postgres().pgbench();
    cmd.args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string(), "-U", "alice"])
        .args(args)
        .arg(Postgres::BENCH_DB)
        .env("PGPASSWORD", proxy.token("1"))
        .env("PGSSLMODE", "disable");
    tokio::task::spawn_blocking(move || cmd.output().expect("run pgbench")).await.unwrap()
}

fn check(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stdout}\n{stderr}");
    stdout
}

fn assert_ran_without_failures(what: &str, stdout: &str) {
    assert!(stdout.contains("number of failed transactions: 0 (0.000%)"), "{what}: {stdout}");
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no transaction count in {stdout}"));
    assert!(processed > 0, "{what}: {stdout}");
}

#[tokio::test]
async fn pgbench_initialises_then_runs_simple_and_prepared() {
    let mut config = base_config(postgres());
    config.upstream.database = None;
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
