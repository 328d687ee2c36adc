//! Starting rlsproxy in-process in front of the test cluster, minting tokens,
//! and connecting clients through it.

use std::net::SocketAddr;
use std::time::Duration;

use rlsproxy::auth::{MintRequest, mint};
use rlsproxy::config::Config;
use rlsproxy::pool::Pool;
use rlsproxy::{Proxy, ShutdownHandle};

use super::Postgres;

/// HS256 secret of [`base_config`].
pub const SECRET: &str = "rlsproxy-test-secret-0123456789abcdef";

/// A proxy running on the current tokio runtime; it stops with the runtime.
pub struct TestProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Graceful shutdown trigger.
    pub handle: ShutdownHandle,
    /// The proxy's pool, to observe open/idle counts.
    pub pool: Pool,
    /// The configuration it runs with (for minting tokens).
    pub config: Config,
    /// The accept loop; finishes after shutdown.
    pub task: tokio::task::JoinHandle<()>,
    /// The admin listener, when `[admin] address` is set.
    pub admin: Option<SocketAddr>,
}

/// A configuration for the test cluster: port 0, HS256 with [`SECRET`], no leeway,
/// database `app`, plaintext upstream, pool of 4. Change fields before [`start`].
pub fn base_config(pg: &Postgres) -> Config {
    let toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\nshutdown_grace_s = 5\n\n{}\n\
         [pool]\nsize = 4\nacquire_timeout_ms = 2000\n\n\
         [jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\nleeway_s = 0\n",
        pg.upstream_toml("disable")
    );
    Config::from_toml(&toml).expect("valid base config")
}

/// Held by a test that checks what strict mode's admissions recorded, and by whoever changes
/// `rlsproxy_private.keys` meanwhile: a change moves the keys' epoch, after which admissions fall back.
pub static KEYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held by tests that run migrations/0003 in a database of their own: two runs at once in one
/// cluster fail ("tuple concurrently updated" on the shared role rlsproxy_owner).
pub static MIGRATIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`base_config`] in strict mode with the guard off, signing under `kid` with `key_hex`,
/// which it first puts into `rlsproxy_private.keys` (the cluster has migrations/0003 applied).
pub async fn strict_without_guard(pg: &Postgres, kid: &str, key_hex: &str) -> Config {
    let _keys = KEYS.lock().await;
    pg.superuser_client(Postgres::APP_DB)
        .await
        .execute(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ($1, decode($2, 'hex')) \
             ON CONFLICT (kid) DO UPDATE SET secret = excluded.secret",
            &[&kid, &key_hex],
        )
        .await
        .expect("strict key");
    let mut cfg = base_config(pg);
    cfg.guard.enabled = false;
    cfg.context.strict = true;
    cfg.context.strict_kid = kid.into();
    cfg.context.strict_key = Some(key_hex.into());
    cfg
}

/// Starts a proxy with `config` (validated first) on the current runtime.
/// With `RLSPROXY_FUZZ_RECORD` set, clients and the upstream connections go through a
/// recording tap (see [`super::tap`]).
pub async fn start(mut config: Config) -> TestProxy {
    config.validate().expect("valid proxy config");
    let record = super::tap::dir();
    if let Some(dir) = &record
        && let Ok(ip) = config.upstream.host.parse::<std::net::IpAddr>()
    {
        let tap = super::tap::listen(dir.clone(), "upstream", (ip, config.upstream.port).into()).await;
        config.upstream.port = tap.port();
    }
    let proxy = Proxy::bind(config.clone()).await.expect("proxy binds");
    let mut addr = proxy.local_addr().expect("local addr");
    if let Some(dir) = record {
        addr = super::tap::listen(dir, "client", addr).await;
    }
    let handle = proxy.shutdown_handle();
    let pool = proxy.pool();
    let admin = proxy.admin_addr();
    let task = tokio::spawn(proxy.run());
    TestProxy { addr, handle, pool, config, task, admin }
}

/// Starts a proxy with [`base_config`].
pub async fn start_default() -> TestProxy {
    start(base_config(super::postgres())).await
}

impl TestProxy {
    /// A token for `tenant`, valid for an hour.
    pub fn token(&self, tenant: &str) -> String {
        self.token_with(tenant, None, Duration::from_secs(3600), &[])
    }

    /// A token with a role, lifetime and extra claims.
    pub fn token_with(&self, tenant: &str, role: Option<&str>, ttl: Duration, extra: &[(&str, &str)]) -> String {
        let req = MintRequest {
            tenant: tenant.into(),
            subject: Some(format!("user-of-{tenant}")),
            role: role.map(str::to_owned),
            ttl,
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        mint(&self.config.jwt, &req).expect("mint token")
    }

    /// tokio-postgres configuration for a client of this proxy (no TLS).
    pub fn client_config(&self, token: &str) -> tokio_postgres::Config {
        client_config(self.addr, token)
    }

    /// A connected tokio-postgres client.
    pub async fn connect(&self, token: &str) -> tokio_postgres::Client {
        super::connect(&self.client_config(token)).await
    }

    /// Connects, returning the error instead of panicking.
    pub async fn try_connect(&self, token: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.client_config(token).connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A libpq connection string for psql through the proxy (plaintext).
    pub fn conninfo(&self, token: &str) -> String {
        format!("host=127.0.0.1 port={} user=alice dbname=app password={token} sslmode=disable", self.addr.port())
    }

    /// Runs psql through the proxy with `-At -c sql`; returns (success, stdout, stderr).
    pub fn psql(&self, token: &str, sql: &str) -> (bool, String, String) {
        let out =
            super::postgres().psql().arg(self.conninfo(token)).args(["-At", "-c", sql]).output().expect("run psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// tokio-postgres configuration for user `alice` of database `app` at a proxy on `addr` (no TLS).
pub fn client_config(addr: SocketAddr, token: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("alice")
        .dbname("app")
        .password(token)
        .connect_timeout(Duration::from_secs(10));
    cfg
}

/// The SQLSTATE and message of a tokio-postgres error from the server (or proxy).
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => ("".into(), e.to_string()),
    }
}
