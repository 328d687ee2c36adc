//! CI check of the load generator (`examples/loadgen.rs`): it builds, and a short
//! run of 40 clients over 10 tenants through a transaction-mode proxy with 4 server
//! connections completes transactions with no error and no row of another tenant.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../examples/loadgen.rs"]
mod loadgen;

use clap::Parser;
use common::proxy::{SECRET, base_config, start};
use common::{Postgres, postgres};
use rlsproxy::config::PoolMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_clients_over_ten_tenants_see_only_their_rows() {
    let pg = postgres();
    let mut cfg = base_config(pg);
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 4;
    let proxy = start(cfg).await;

    let setup_url = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={}",
        pg.port(),
        Postgres::SUPERUSER,
        pg.superuser_password(),
        Postgres::APP_DB
    );
    let port = proxy.addr.port().to_string();
    // Mixed mode: reads, and every 5th transaction an explicit BEGIN; UPDATE; COMMIT.
    let opts = loadgen::Opts::try_parse_from([
        "loadgen",
        "--port",
        &port,
        "--secret",
        SECRET,
        "--clients",
        "40",
        "--tenants",
        "10",
        "--duration",
        "3s",
        "--mode",
        "mixed",
        "--setup-url",
        &setup_url,
    ])
    .expect("valid command line");
    let report = loadgen::run(&opts).await.expect("load generator runs");
    println!("{report}");
    assert!(report.transactions > 0, "{report}");
    assert_eq!(report.errors, 0, "{report}; first error: {:?}", report.first_error);
    assert_eq!(report.foreign_rows, 0, "{report}");
    assert_eq!(report.empty_reads, 0, "{report}");
    // Every read saw exactly its tenant's 20 rows, every update exactly one row.
    let reads = report.transactions - report.updates;
    assert_eq!(report.rows, reads * loadgen::ROWS_PER_TENANT as u64 + report.updates, "{report}");
    assert!(report.updates > 0, "{report}");
}
