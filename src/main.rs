//! The `rlsproxy` command: run the proxy, check a configuration, mint a token, audit the
//! database's row-level security.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use rlsproxy::auth::{MintRequest, mint};
use rlsproxy::config::Config;
use rlsproxy::reload::Reloader;
use rlsproxy::{Proxy, server, upstream::UpstreamError};

#[derive(Parser)]
#[command(version, about = "PostgreSQL proxy that injects a verified tenant context into every transaction")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy.
    Run {
        /// Configuration file (TOML); RLSPROXY__SECTION__KEY variables override it.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and every file it names.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Mint a development token with the configured secret or private key.
    Token {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Tenant claim value.
        #[arg(long)]
        tenant: String,
        /// `sub` claim.
        #[arg(long)]
        sub: Option<String>,
        /// Role claim value (needs jwt.role_claim).
        #[arg(long)]
        role: Option<String>,
        /// Lifetime, e.g. 1h, 15m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Extra claim k=v (v parsed as JSON when it parses); repeatable.
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
    },
    /// Audit the database's row-level security as the proxy's user.
    /// Exit code: 0 no findings, 1 findings, 2 error (configuration, connection).
    Doctor {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Database to audit instead of upstream.database.
        #[arg(long)]
        database: Option<String>,
    },
    /// Exit 0 when a probe URL of the admin listener answers 200 (container health checks).
    Healthcheck {
        /// The probe to GET.
        #[arg(long, default_value = "http://127.0.0.1:9930/readyz")]
        url: String,
    },
}

/// Output of `rlsproxy doctor`.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Grouped findings, one line of fix each.
    Text,
    /// The documented JSON document (docs/doctor.md, "Output").
    Json,
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Doctor { config, format, database } => doctor(config, format, database),
        Command::Healthcheck { url } => match rlsproxy::admin::probe::status_of(&url) {
            Ok(200) => ExitCode::SUCCESS,
            Ok(status) => fail(&format!("{url} answered {status}")),
            Err(e) => fail(&format!("{url}: {e}")),
        },
        Command::Token { config, tenant, sub, role, ttl, claims } => {
            let request = MintRequest { tenant, subject: sub, role, ttl, extra: claims };
            match Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| mint(&c.jwt, &request).map_err(|e| e.to_string()))
            {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rlsproxy: {message}");
    ExitCode::FAILURE
}

fn check_config(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    match server::build_shared(config, rx) {
        Ok(_) => {
            println!("{}: configuration OK", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Exit codes of `rlsproxy doctor`: CI pipelines tell findings from a failed audit.
const DOCTOR_FINDINGS: u8 = 1;
const DOCTOR_ERROR: u8 = 2;

fn doctor(path: PathBuf, format: Format, database: Option<String>) -> ExitCode {
    let failed = |message: String| {
        eprintln!("rlsproxy doctor: {message}");
        ExitCode::from(DOCTOR_ERROR)
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return failed(format!("cannot start the runtime: {e}")),
    };
    let report = match runtime.block_on(rlsproxy::doctor::run(&config, database.as_deref())) {
        Ok(report) => report,
        Err(e) => return failed(e.to_string()),
    };
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!("{}", report.to_json()),
    }
    if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(DOCTOR_FINDINGS) }
}

fn run(path: PathBuf) -> ExitCode {
    let (config, text) = match Config::load_with_text(&path) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e.to_string()),
    };
    let log = rlsproxy::logging::init(&config);
    let mut builder = match config.listen.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        // Before anything listens: SIGHUP's default action would end the process.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
        };
        let doctor_config = config.clone();
        let proxy = match Proxy::bind(config).await {
            Ok(p) => p,
            Err(e) => return fail(&e.to_string()),
        };
        match proxy.check_upstream().await {
            Ok(()) => {
                tracing::info!("upstream reachable and its role is safe");
                // The RLS audit: findings are warnings; it neither delays nor fails start-up.
                tokio::spawn(async move { rlsproxy::doctor::log_findings(&doctor_config).await });
            }
            Err(e @ UpstreamError::UnsafeRole(_)) => return fail(&e.to_string()),
            Err(e) => tracing::warn!(error = %e, "upstream not reachable yet; clients will get 08006 until it is"),
        }
        let reloader = proxy.reloader(&path, &text, Some(log));
        tokio::spawn(reloader.clone().watch());
        tokio::spawn(signals.handle(proxy.shutdown_handle(), reloader));
        match proxy.local_addr() {
            Ok(addr) => tracing::info!(%addr, "rlsproxy listening"),
            Err(e) => return fail(&e.to_string()),
        }
        if let Some(addr) = proxy.admin_addr() {
            tracing::info!(%addr, "admin listener (healthz, readyz, metrics, admin views)");
        }
        proxy.run().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM/SIGINT start the graceful shutdown; SIGHUP reloads the configuration.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, hup: signal(SignalKind::hangup())? })
    }

    async fn handle(mut self, shutdown: server::ShutdownHandle, reloader: Arc<Reloader>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = self.hup.recv() => {
                    // In a task of its own, so that a slow reload (a JWKS fetch) never delays a
                    // shutdown; reloads queue behind one another.
                    let reloader = reloader.clone();
                    tokio::spawn(async move { reloader.reload("SIGHUP").await });
                }
            }
        }
        tracing::info!("signal received");
        shutdown.shutdown();
    }
}
