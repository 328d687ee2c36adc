//! Multi-tenant load generator for rlsproxy (issue 5).
//!
//! N clients over M tenants, each connected through the proxy with its own token (tenant
//! `(i % M) + 1`), run read transactions (`SELECT tenant_id, id FROM loadgen_items`, a
//! prepared statement) and, in `mixed` mode, every 5th iteration an explicit transaction
//! updating one of their own rows. Every row read or updated must carry the client's
//! tenant; any other is a *foreign row*. At the end one summary line gives transactions,
//! TPS, latency percentiles, errors and foreign rows; the exit status is 1 when there
//! were errors or foreign rows.
//!
//! ```sh
//! cargo run --release --example loadgen -- --port 6432 --config config/rlsproxy.example.toml \
//!     --setup-url "host=127.0.0.1 port=5432 user=postgres dbname=app" \
//!     --clients 200 --tenants 50 --duration 10s --mode mixed
//! ```
//!
//! `--setup-url` (a superuser connection string) creates `loadgen_items` idempotently, with
//! RLS enabled and forced and a policy on `app.current_tenant`, and inserts 20 rows for
//! each tenant 1..=M. Clients connect without TLS (the proxy accepts that on loopback).
//! `tests/loadgen.rs` includes this file to run [`run`] against the test cluster.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser, ValueEnum};
use rlsproxy::auth::{MintRequest, mint};
use rlsproxy::config::{Config, JwtConfig};
use tokio::sync::Barrier;
use tokio_postgres::{Client, NoTls};

/// Rows per tenant inserted by `--setup-url`.
pub const ROWS_PER_TENANT: i32 = 20;

/// What each client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Read transactions only.
    Read,
    /// Reads, and every 5th transaction an UPDATE of one of the client's own rows.
    Mixed,
}

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(about = "Multi-tenant load generator for rlsproxy: checks every row belongs to the client's tenant")]
#[command(group(ArgGroup::new("key").required(true).args(["config", "secret"])))]
pub struct Opts {
    /// Proxy host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Proxy port.
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
    /// Database to ask for.
    #[arg(long, default_value = "app")]
    pub dbname: String,
    /// User name sent to the proxy (only logged by it).
    #[arg(long, default_value = "loadgen")]
    pub user: String,
    /// The proxy's configuration file: tokens are minted with its [jwt] section.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HS256 secret to mint tokens with (instead of --config).
    #[arg(long, env = "LOADGEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Concurrent clients, each with its own connection and token.
    #[arg(long, default_value_t = 200)]
    pub clients: u32,
    /// Tenants 1..=M; client i runs as tenant (i % M) + 1.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenants: u32,
    /// How long to run, after all clients have connected (humantime: 10s, 1m…).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Workload.
    #[arg(long, value_enum, default_value_t = Mode::Read)]
    pub mode: Mode,
    /// Superuser libpq connection string: create and fill loadgen_items before the run.
    #[arg(long)]
    pub setup_url: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Committed transactions (reads and updates).
    pub transactions: u64,
    /// Update transactions among them.
    pub updates: u64,
    /// Rows read or updated.
    pub rows: u64,
    /// Rows of another tenant than the client's: must be 0.
    pub foreign_rows: u64,
    /// Reads that returned no row at all (no data for the tenant, or a missing context).
    pub empty_reads: u64,
    /// Failed connections, statements and transactions.
    pub errors: u64,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Latency percentiles of the transactions.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Report {
    /// Transactions per second over [`Self::elapsed`].
    pub fn tps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.transactions as f64 / secs } else { 0.0 }
    }

    /// No error and no foreign row.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.foreign_rows == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "loadgen: {} transactions ({} updates) in {:.2}s, {:.1} tps, latency p50 {:.2} ms p90 {:.2} ms \
             p99 {:.2} ms, rows {}, foreign rows {}, empty reads {}, errors {}",
            self.transactions,
            self.updates,
            self.elapsed.as_secs_f64(),
            self.tps(),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            self.rows,
            self.foreign_rows,
            self.empty_reads,
            self.errors
        )
    }
}

/// One client's counters.
#[derive(Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    updates: u64,
    rows: u64,
    foreign_rows: u64,
    empty_reads: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ClientStats {
    fn error(&mut self, what: &str, e: &tokio_postgres::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            // A server (or proxy) error displays as "db error" alone: show its SQLSTATE and message.
            self.first_error = Some(match e.as_db_error() {
                Some(db) => format!("{what}: {} {}", db.code().code(), db.message()),
                None => format!("{what}: {e}"),
            });
        }
    }

    /// Counts `tenants` (one per row) against the client's own tenant.
    fn check(&mut self, tenant: i32, tenants: impl Iterator<Item = i32>) -> usize {
        let mut n = 0;
        for t in tenants {
            n += 1;
            if t != tenant {
                self.foreign_rows += 1;
            }
        }
        self.rows += n as u64;
        n
    }
}

/// Sets up the data when asked, mints a token per client, connects them all, runs them for
/// `opts.duration`, and merges their counters. Errors only for what stops the whole run
/// (configuration, minting, setup); the clients' errors are counted in the report.
pub async fn run(opts: &Opts) -> Result<Report, String> {
    let jwt = jwt_config(opts)?;
    if let Some(url) = &opts.setup_url {
        setup(url, opts.tenants).await?;
    }
    // Every token first: a minting error must not leave clients waiting at the barrier.
    let ttl = opts.duration + Duration::from_secs(3600);
    let mut configs = Vec::with_capacity(opts.clients as usize);
    for i in 0..opts.clients {
        let tenant = (i % opts.tenants) as i32 + 1;
        let req = MintRequest {
            tenant: tenant.to_string(),
            subject: Some(format!("loadgen-{i}")),
            role: None,
            ttl,
            extra: Vec::new(),
        };
        let token = mint(&jwt, &req).map_err(|e| format!("cannot mint a token: {e}"))?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&opts.host)
            .port(opts.port)
            .user(&opts.user)
            .dbname(&opts.dbname)
            .password(token)
            .connect_timeout(Duration::from_secs(10));
        configs.push((i, tenant, config));
    }
    let start = Arc::new(Barrier::new(configs.len() + 1));
    let tasks: Vec<_> = configs
        .into_iter()
        .map(|(i, tenant, config)| tokio::spawn(client(config, i, tenant, opts.mode, start.clone(), opts.duration)))
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut report = Report::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let stats = task.await.map_err(|e| format!("client task failed: {e}"))?;
        report.transactions += stats.latencies.len() as u64;
        report.updates += stats.updates;
        report.rows += stats.rows;
        report.foreign_rows += stats.foreign_rows;
        report.empty_reads += stats.empty_reads;
        report.errors += stats.errors;
        report.first_error = report.first_error.or(stats.first_error);
        latencies.extend(stats.latencies);
    }
    report.elapsed = began.elapsed();
    latencies.sort_unstable();
    let percentile = |p: usize| match latencies.len() {
        0 => Duration::ZERO,
        n => latencies[((n * p).div_ceil(100)).clamp(1, n) - 1],
    };
    (report.p50, report.p90, report.p99) = (percentile(50), percentile(90), percentile(99));
    Ok(report)
}

/// The [jwt] section of `--config`, or HS256 with `--secret`.
fn jwt_config(opts: &Opts) -> Result<JwtConfig, String> {
    match (&opts.config, &opts.secret) {
        (Some(path), _) => Config::load(path).map(|c| c.jwt).map_err(|e| format!("{}: {e}", path.display())),
        (None, Some(secret)) => {
            Ok(JwtConfig { algorithms: vec!["HS256".into()], secret: Some(secret.clone()), ..JwtConfig::default() })
        }
        (None, None) => Err("give --config or --secret".into()),
    }
}

/// Creates `loadgen_items` (RLS enabled and forced, tenant policy, rights for app_proxy)
/// and 20 rows per tenant 1..=`tenants`; re-runnable, serialised by an advisory lock.
async fn setup(url: &str, tenants: u32) -> Result<(), String> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.map_err(|e| format!("setup: cannot connect: {e}"))?;
    let connection = tokio::spawn(connection);
    let sql = format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('loadgen_items'));
         CREATE TABLE IF NOT EXISTS loadgen_items (
             tenant_id integer NOT NULL,
             id        integer NOT NULL,
             payload   text    NOT NULL,
             PRIMARY KEY (tenant_id, id)
         );
         ALTER TABLE loadgen_items ENABLE ROW LEVEL SECURITY;
         ALTER TABLE loadgen_items FORCE ROW LEVEL SECURITY;
         DO $$
         BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_policies
                            WHERE tablename = 'loadgen_items' AND policyname = 'loadgen_tenant') THEN
                 CREATE POLICY loadgen_tenant ON loadgen_items
                     USING (tenant_id = current_setting('app.current_tenant')::integer);
             END IF;
         END
         $$;
         GRANT SELECT, UPDATE ON loadgen_items TO app_proxy;
         INSERT INTO loadgen_items (tenant_id, id, payload)
             SELECT t, i, 'item ' || i
             FROM generate_series(1, {tenants}) t, generate_series(1, {ROWS_PER_TENANT}) i
             ON CONFLICT DO NOTHING;
         COMMIT;"
    );
    let result = client.batch_execute(&sql).await.map_err(|e| format!("setup: {e}"));
    drop(client);
    let _ = connection.await;
    result
}

/// One client: connect and prepare, wait for the others, then run until `duration` is over.
/// A failed connection or preparation ends the client (after the start barrier); a failed
/// transaction is counted and the client goes on while its connection is open.
async fn client(
    config: tokio_postgres::Config,
    index: u32,
    tenant: i32,
    mode: Mode,
    start: Arc<Barrier>,
    duration: Duration,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let prepared = prepare(&config).await;
    start.wait().await;
    let (client, select, update) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            stats.error("connect", &e);
            return stats;
        }
    };
    let deadline = Instant::now() + duration;
    let mut iteration: u64 = 0;
    while Instant::now() < deadline {
        let began = Instant::now();
        let updating = mode == Mode::Mixed && iteration % 5 == 4;
        let result = if updating {
            let id = (iteration / 5 % ROWS_PER_TENANT as u64) as i32 + 1;
            let payload = format!("client {index} iteration {iteration}");
            update_one(&client, &update, id, &payload).await
        } else {
            client.query(&select, &[]).await
        };
        iteration += 1;
        match result {
            Ok(rows) => {
                stats.latencies.push(began.elapsed());
                let n = stats.check(tenant, rows.iter().map(|r| r.get::<_, i32>(0)));
                if updating {
                    stats.updates += 1;
                } else if n == 0 {
                    stats.empty_reads += 1;
                }
            }
            Err(e) => {
                stats.error(if updating { "update" } else { "select" }, &e);
                if client.is_closed() {
                    break;
                }
            }
        }
    }
    stats
}

/// Connects and prepares the two statements.
async fn prepare(
    config: &tokio_postgres::Config,
) -> Result<(Client, tokio_postgres::Statement, tokio_postgres::Statement), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    // Its error, if any, reaches the client's next call.
    tokio::spawn(connection);
    let select = client.prepare("SELECT tenant_id, id FROM loadgen_items").await?;
    let update = client.prepare("UPDATE loadgen_items SET payload = $2 WHERE id = $1 RETURNING tenant_id").await?;
    Ok((client, select, update))
}

/// BEGIN; UPDATE (RLS limits it to the client's tenant); COMMIT. Returns the updated rows.
async fn update_one(
    client: &Client,
    update: &tokio_postgres::Statement,
    id: i32,
    payload: &str,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    match client.query(update, &[&id, &payload]).await {
        Ok(rows) => {
            client.batch_execute("COMMIT").await?;
            Ok(rows)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

#[allow(dead_code)] // unused where tests/loadgen.rs includes this file as a module
#[tokio::main]
async fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(&opts).await {
        Ok(report) => {
            println!("{report}");
            if let Some(e) = &report.first_error {
                eprintln!("loadgen: first error: {e}");
            }
            if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
