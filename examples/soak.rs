//! The soak's clients and its ledger check (`bench/soak.sh` runs it under chaos).
//!
//! N clients over M tenants append to `soak_ledger` through rlsproxy: each transaction
//! inserts two rows (parts 1 and 2) under the client's next sequence number, and the
//! client remembers every COMMIT that was acknowledged. Any error makes it reconnect
//! (and it reconnects every `--churn` transactions anyway); every 50 transactions it asks
//! for another tenant's client's rows, which must be none. At the end the ledger is
//! checked against the database, as the superuser:
//! - every acknowledged commit is there, exactly once (*lost* otherwise);
//! - nothing is there that was not acknowledged, except a transaction whose COMMIT had no
//!   answer (*phantom* otherwise);
//! - no transaction is half there (*half*), and every row carries its client's tenant;
//! - no client saw another tenant's row (*foreign*).
//!
//! One summary line; exit status 1 on any violation or when nothing was committed.
//!
//! ```sh
//! cargo run --release --example soak -- --port 6432 --config rlsproxy.toml \
//!     --setup-url "host=/tmp/pg port=5432 user=postgres dbname=app" --duration 1h
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rlsproxy::auth::{MintRequest, mint};
use rlsproxy::config::Config;
use tokio_postgres::{Client, NoTls, Statement};

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(about = "rlsproxy soak: clients append a ledger through the proxy; the database is checked against it")]
struct Opts {
    /// Proxy host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Proxy port.
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// Database to ask for.
    #[arg(long, default_value = "app")]
    dbname: String,
    /// The proxy's configuration file: tokens are minted with its [jwt] section.
    #[arg(long)]
    config: PathBuf,
    /// Superuser libpq connection string: creates (empties) soak_ledger, then checks it.
    #[arg(long)]
    setup_url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: i32,
    /// Tenants 1..=M; client i runs as tenant (i % M) + 1.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(2..))]
    tenants: i32,
    /// How long the clients write (humantime: 2m, 1h…).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Transactions per connection before a client reconnects on purpose.
    #[arg(long, default_value_t = 200)]
    churn: u32,
}

/// What one client knows at the end.
#[derive(Default)]
struct Ledger {
    acked: Vec<i32>,
    /// Sequence numbers whose COMMIT was sent but not answered: committed or not.
    unanswered: Vec<i32>,
    connections: u64,
    errors: u64,
    foreign: i64,
    first_error: Option<String>,
}

impl Ledger {
    fn error(&mut self, e: &tokio_postgres::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(match e.as_db_error() {
                Some(db) => format!("{} {}", db.code().code(), db.message()),
                None => e.to_string(),
            });
        }
    }
}

/// Where a transaction failed: before its COMMIT was sent (not committed), or at it.
enum Failed {
    Before(tokio_postgres::Error),
    AtCommit(tokio_postgres::Error),
}

async fn append(client: &Client, insert: &Statement, tenant: i32, id: i32, seq: i32) -> Result<(), Failed> {
    client.batch_execute("BEGIN").await.map_err(Failed::Before)?;
    for part in [1, 2] {
        client.execute(insert, &[&tenant, &id, &seq, &part]).await.map_err(Failed::Before)?;
    }
    client.batch_execute("COMMIT").await.map_err(Failed::AtCommit)
}

/// One client until `deadline`: connect, append `churn` transactions, reconnect; any error
/// ends the connection.
async fn client(opts: Opts, config: tokio_postgres::Config, id: i32, deadline: Instant) -> Ledger {
    let tenant = id % opts.tenants + 1;
    // A client of the next tenant: its rows must never be visible here.
    let other = (id + 1) % opts.clients;
    let mut ledger = Ledger::default();
    let mut seq = 0;
    while Instant::now() < deadline {
        let connected = async {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(connection);
            let insert = client
                .prepare("INSERT INTO soak_ledger (tenant_id, client, seq, part) VALUES ($1, $2, $3, $4)")
                .await?;
            let probe = client.prepare("SELECT count(*) FROM soak_ledger WHERE client = $1").await?;
            Ok::<_, tokio_postgres::Error>((client, insert, probe))
        };
        let (client, insert, probe) = match connected.await {
            Ok(c) => c,
            Err(e) => {
                ledger.error(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        ledger.connections += 1;
        for _ in 0..opts.churn {
            if Instant::now() >= deadline {
                break;
            }
            seq += 1;
            match append(&client, &insert, tenant, id, seq).await {
                Ok(()) => ledger.acked.push(seq),
                Err(Failed::Before(e)) => {
                    ledger.error(&e);
                    break;
                }
                Err(Failed::AtCommit(e)) => {
                    ledger.error(&e);
                    ledger.unanswered.push(seq);
                    break;
                }
            }
            if seq % 50 == 0 {
                match client.query_one(&probe, &[&other]).await {
                    Ok(row) => ledger.foreign += row.get::<_, i64>(0),
                    Err(e) => {
                        ledger.error(&e);
                        break;
                    }
                }
            }
        }
    }
    ledger
}

/// Creates soak_ledger (RLS on `app.current_tenant`, forced) empty.
async fn setup(admin: &Client) -> Result<(), tokio_postgres::Error> {
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS soak_ledger;
             CREATE TABLE soak_ledger (tenant_id integer NOT NULL, client integer NOT NULL,
                                       seq integer NOT NULL, part integer NOT NULL,
                                       PRIMARY KEY (client, seq, part));
             ALTER TABLE soak_ledger ENABLE ROW LEVEL SECURITY;
             ALTER TABLE soak_ledger FORCE ROW LEVEL SECURITY;
             CREATE POLICY soak_tenant ON soak_ledger
                 USING (tenant_id = current_setting('app.current_tenant')::integer)
                 WITH CHECK (tenant_id = current_setting('app.current_tenant')::integer);
             GRANT SELECT, INSERT ON soak_ledger TO app_proxy;",
        )
        .await
}

/// Violations of the ledger: (lost, phantom, half, wrong tenant).
async fn check(admin: &Client, opts: &Opts, ledgers: &[Ledger]) -> Result<[usize; 4], tokio_postgres::Error> {
    let rows = admin
        .query(
            "SELECT client, seq, count(*), bool_and(tenant_id = client % $1 + 1) FROM soak_ledger GROUP BY 1, 2",
            &[&opts.tenants],
        )
        .await?;
    let mut stored: BTreeMap<(i32, i32), (i64, bool)> = BTreeMap::new();
    for row in &rows {
        stored.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
    }
    let half = stored.values().filter(|(parts, _)| *parts != 2).count();
    let wrong_tenant = stored.values().filter(|(_, right)| !right).count();
    let mut lost = 0;
    let mut phantom = stored.len();
    for (id, ledger) in (0..).zip(ledgers) {
        lost += ledger.acked.iter().filter(|seq| !stored.contains_key(&(id, **seq))).count();
        phantom -=
            ledger.acked.iter().chain(&ledger.unanswered).filter(|seq| stored.contains_key(&(id, **seq))).count();
    }
    Ok([lost, phantom, half, wrong_tenant])
}

async fn run(opts: Opts) -> Result<bool, String> {
    let (admin, connection) =
        tokio_postgres::connect(&opts.setup_url, NoTls).await.map_err(|e| format!("setup: cannot connect: {e}"))?;
    tokio::spawn(connection);
    setup(&admin).await.map_err(|e| format!("setup: {e}"))?;
    let jwt = Config::load(&opts.config).map_err(|e| format!("{}: {e}", opts.config.display()))?.jwt;
    let deadline = Instant::now() + opts.duration;
    let mut tasks = Vec::new();
    for id in 0..opts.clients {
        let request = MintRequest {
            tenant: (id % opts.tenants + 1).to_string(),
            subject: Some(format!("soak-{id}")),
            role: None,
            ttl: opts.duration + Duration::from_secs(3600),
            extra: Vec::new(),
        };
        let token = mint(&jwt, &request).map_err(|e| format!("cannot mint a token: {e}"))?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&opts.host)
            .port(opts.port)
            .user("soak")
            .dbname(&opts.dbname)
            .password(token)
            .connect_timeout(Duration::from_secs(10));
        tasks.push(tokio::spawn(client(opts.clone(), config, id, deadline)));
    }
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.map_err(|e| format!("client task failed: {e}"))?);
    }
    // The database may still be restarting from the last chaos step.
    let (admin, connection) =
        tokio_postgres::connect(&opts.setup_url, NoTls).await.map_err(|e| format!("check: cannot connect: {e}"))?;
    tokio::spawn(connection);
    let [lost, phantom, half, wrong_tenant] =
        check(&admin, &opts, &ledgers).await.map_err(|e| format!("check: {e}"))?;
    let acked: usize = ledgers.iter().map(|l| l.acked.len()).sum();
    let unanswered: usize = ledgers.iter().map(|l| l.unanswered.len()).sum();
    let foreign: i64 = ledgers.iter().map(|l| l.foreign).sum();
    let connections: u64 = ledgers.iter().map(|l| l.connections).sum();
    let errors: u64 = ledgers.iter().map(|l| l.errors).sum();
    println!(
        "soak: {acked} commits acknowledged ({unanswered} unanswered) in {:?} over {connections} connections, \
         {errors} errors; lost {lost}, phantom {phantom}, half {half}, wrong tenant {wrong_tenant}, foreign rows {foreign}",
        opts.duration
    );
    if let Some(e) = ledgers.iter().find_map(|l| l.first_error.as_ref()) {
        println!("soak: first error (clients reconnect on errors): {e}");
    }
    Ok(acked > 0 && lost + phantom + half + wrong_tenant == 0 && foreign == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Opts::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}
