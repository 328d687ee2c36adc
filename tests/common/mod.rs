//! Shared integration-test harness: one throwaway PostgreSQL cluster per test
//! binary, loaded with `migrations/*.sql`, plus a raw protocol client.
//!
//! Include it with `mod common;` and call [`postgres()`] from any test (sync or
//! async): the first call starts the cluster, later calls return the same one.
//! The cluster stops and its files are removed when the test process exits,
//! even on panic or abort (see `host::spawn_watchdog`).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

mod cluster;
mod host;
pub mod http;
pub mod proxy;
pub mod queries;
pub mod raw;
pub mod reply;
pub mod tap;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A running throwaway cluster. Databases: `postgres`, `app` (schema and seed
/// data from `migrations/`), `bench` (empty, owned by `app_proxy`, for `pgbench -i`).
#[derive(Debug)]
pub struct Postgres {
    /// Temporary directory: `data/`, TLS files, the Unix socket, `postgres.log`.
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    superuser_password: String,
}

/// Starts the cluster on first use; every later call returns the same one.
///
/// Blocking std code only, so it works inside or outside a tokio runtime. If
/// startup fails once, every caller panics with the same message instead of
/// starting another cluster.
pub fn postgres() -> &'static Postgres {
    static CLUSTER: OnceLock<Result<Postgres, String>> = OnceLock::new();
    let started = CLUSTER.get_or_init(|| {
        std::panic::catch_unwind(cluster::start).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into())
        })
    });
    match started {
        Ok(pg) => pg,
        Err(e) => panic!("test PostgreSQL cluster failed to start: {e}"),
    }
}

impl Postgres {
    /// Superuser (password auth over TCP, trust over the Unix socket).
    pub const SUPERUSER: &str = "postgres";
    /// The proxy's upstream role: LOGIN NOINHERIT, member of admin_role, SCRAM.
    pub const PROXY_USER: &str = "app_proxy";
    /// Password of [`Self::PROXY_USER`].
    pub const PROXY_PASSWORD: &str = "app-proxy-test-password";
    /// As app_proxy, but its password is stored as md5 (`host ... md5` in pg_hba).
    pub const MD5_USER: &str = "md5_user";
    /// Password of [`Self::MD5_USER`].
    pub const MD5_PASSWORD: &str = "md5-user-test-password";
    /// As app_proxy, but `trust` over TCP: no password exchange at all.
    pub const TRUST_USER: &str = "trust_user";
    /// LOGIN **INHERIT** member of admin_role (SCRAM): an upstream role the proxy must refuse.
    pub const INHERIT_USER: &str = "inherit_user";
    /// Password of [`Self::INHERIT_USER`].
    pub const INHERIT_PASSWORD: &str = "inherit-user-test-password";
    /// Database holding the example schema and seed data.
    pub const APP_DB: &str = "app";
    /// Empty database owned by app_proxy, for `pgbench -i`.
    pub const BENCH_DB: &str = "bench";

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Directory of the PostgreSQL binaries used (initdb, postgres, psql, pgbench).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// PEM certificate of the throwaway CA that signed the server certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// PEM server certificate: CN=localhost, SAN DNS:localhost and IP:127.0.0.1.
    /// Reusable as the proxy's own client-facing certificate in tests.
    pub fn server_cert_path(&self) -> PathBuf {
        self.root.join("server.crt")
    }

    /// PEM (PKCS#8, P-256) private key of [`Self::server_cert_path`].
    pub fn server_key_path(&self) -> PathBuf {
        self.root.join("server.key")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Directory of the Unix socket (`local` connections are `trust`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The server log: read it when a test needs to know what the server saw.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Random password of [`Self::SUPERUSER`].
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// Superuser over TCP with SCRAM, no TLS.
    pub fn superuser_config(&self, db: &str) -> tokio_postgres::Config {
        self.tcp_config(Self::SUPERUSER, &self.superuser_password, db)
    }

    /// app_proxy over TCP with SCRAM, no TLS: what the proxy itself does upstream.
    pub fn proxy_config(&self, db: &str) -> tokio_postgres::Config {
        self.tcp_config(Self::PROXY_USER, Self::PROXY_PASSWORD, db)
    }

    /// An `[upstream]` section of an rlsproxy config for this cluster: database
    /// app, app_proxy with its password; `sslmode` is a libpq value ("disable",
    /// "require", "verify-full"…), with the test CA as `sslrootcert` unless "disable".
    pub fn upstream_toml(&self, sslmode: &str) -> String {
        let mut toml = format!(
            "[upstream]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"{}\"\n\
             user = \"{}\"\npassword = \"{}\"\nsslmode = \"{sslmode}\"\n",
            self.port,
            Self::APP_DB,
            Self::PROXY_USER,
            Self::PROXY_PASSWORD,
        );
        if sslmode != "disable" {
            toml += &format!("sslrootcert = \"{}\"\n", self.ca_cert_path().display());
        }
        toml
    }

    /// A tokio-postgres config for `user` on 127.0.0.1 (empty `password`: none sent).
    pub fn tcp_config(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(Duration::from_secs(10));
        if !password.is_empty() {
            config.password(password);
        }
        config
    }

    /// A superuser client; its connection task runs on the current tokio runtime.
    pub async fn superuser_client(&self, db: &str) -> tokio_postgres::Client {
        connect(&self.superuser_config(db)).await
    }

    /// `psql -X -q -v ON_ERROR_STOP=1` from [`Self::bindir`], with no connection
    /// parameters: add a conninfo string (e.g. to reach the proxy). `PG*`
    /// variables of the caller's environment are removed so they cannot redirect it.
    pub fn psql(&self) -> Command {
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// [`Self::psql`] connected as the superuser to `db` over the Unix socket (trust).
    pub fn superuser_psql(&self, db: &str) -> Command {
        let mut cmd = self.psql();
        cmd.arg("-h").arg(&self.root);
        cmd.args(["-p", &self.port.to_string(), "-U", Self::SUPERUSER, "-d", db]);
        cmd
    }

    /// `pg_ctl restart -m <mode>` (`fast` or `immediate`): the same port and settings, every
    /// connection ended; returns once the server accepts connections again. The watchdog
    /// follows postmaster.pid, so it stops the new server too. The new server logs to
    /// `postgres-restarted.log` (the first one's file belongs to the test process).
    pub fn restart(&self, mode: &str) {
        let out = host::server_command(&self.bindir, "pg_ctl", &self.root, host::server_owner())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "-l"])
            .arg(self.root.join("postgres-restarted.log"))
            .arg("restart")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl restart");
        assert!(out.success(), "pg_ctl restart -m {mode} failed; see {}", self.log_path().display());
    }

    /// `pgbench` from [`Self::bindir`], no connection parameters (as [`Self::psql`]).
    pub fn pgbench(&self) -> Command {
        self.tool("pgbench")
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(name));
        for var in host::PG_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// Connects with `config` (no TLS) and spawns the connection task.
pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connect to the test cluster");
    tokio::spawn(async move {
        // The error, if any, reaches the test through the client's next call.
        let _ = connection.await;
    });
    client
}
