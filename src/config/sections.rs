//! The sections of the configuration file, one struct each, with the defaults a
//! production deployment would pick.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When a client must use TLS before sending its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RequireTls {
    /// Every client must use TLS.
    Always,
    /// Clients on loopback may use plaintext (a sidecar on localhost).
    #[default]
    NonLoopback,
    /// Plaintext is accepted from anywhere (development only).
    Never,
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Address the proxy accepts clients on.
    pub address: SocketAddr,
    /// PEM certificate chain offered to clients; TLS is offered when set with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Whether a token may cross the network in clear.
    pub require_tls: RequireTls,
    /// Seconds that open transactions get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_s: u64,
    /// Client connections at most; more are refused with SQLSTATE 53300.
    pub max_clients: usize,
    /// Threads relaying sessions; 0: one per CPU. One thread (PgBouncer's model) spends the
    /// least CPU per transaction while it keeps up: no cross-thread wake-ups.
    pub worker_threads: usize,
    /// `SO_REUSEPORT` on the listener: a new process may listen on the same port while this
    /// one drains, so that a restart refuses no client (docs/operations.md,
    /// "Restarting without refusing clients").
    pub reuse_port: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 6432)),
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: RequireTls::NonLoopback,
            shutdown_grace_s: 30,
            max_clients: 10_000,
            worker_threads: 0,
            reuse_port: false,
        }
    }
}

/// libpq's `sslmode` values, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verification.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is verified only when `sslrootcert` is set (as libpq).
    Require,
    /// TLS with the chain verified against `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name `host`.
    VerifyFull,
}

/// `[upstream]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database to connect to; when unset, the database the client asked for.
    pub database: Option<String>,
    /// With `database` unset, the databases clients may ask for (required then, so that no
    /// client reaches a database nobody listed, or audited with the doctor).
    pub allowed_databases: Vec<String>,
    /// The proxy's own role (must be NOINHERIT towards every allowed role).
    pub user: String,
    /// Password of `user`.
    pub password: Option<String>,
    /// File holding the password of `user` (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// TLS towards the server.
    pub sslmode: SslMode,
    /// PEM CA bundle to verify the server with.
    pub sslrootcert: Option<PathBuf>,
    /// Time allowed for TCP connect, TLS and authentication, and for the awaited set-up
    /// (reset, injection) of a lent connection.
    pub connect_timeout_ms: u64,
    /// Accept an upstream role that owns tables with RLS enabled but not forced.
    pub allow_unforced_owned_tables: bool,
    /// `search_path` of every server connection, sent as a startup parameter: it takes
    /// precedence over `ALTER ROLE`/`ALTER DATABASE … SET`, which a tenant sharing the role
    /// could otherwise use to make every later connection resolve names to its objects.
    pub search_path: String,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            database: None,
            allowed_databases: Vec::new(),
            user: "app_proxy".into(),
            password: None,
            password_file: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout_ms: 5000,
            allow_unforced_owned_tables: false,
            search_path: "public".into(),
        }
    }
}

/// How server connections are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// A client owns one server connection for its whole session.
    #[default]
    Session,
    /// A server connection is lent for one transaction.
    Transaction,
}

/// `[pool]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Sharing mode.
    pub mode: PoolMode,
    /// Upstream connections at most, over all databases.
    pub size: usize,
    /// Clean connections kept open for `upstream.database` (needs it set).
    pub min_idle: usize,
    /// How long a client waits for a connection before SQLSTATE 53300.
    pub acquire_timeout_ms: u64,
    /// Clients that may wait at once; more get SQLSTATE 53300 at once.
    pub max_waiting_clients: usize,
    /// Idle server connections unused for this long are closed.
    pub idle_timeout_s: u64,
    /// Server connections older than this are closed when next idle.
    pub max_lifetime_s: u64,
    /// Client statements kept prepared per server connection in transaction mode.
    pub max_prepared_statements: usize,
    /// A client idle inside a transaction for this long is disconnected (SQLSTATE 25P03) and
    /// its transaction rolled back, so that it cannot hold a server connection (and locks)
    /// from everyone else; 0: never.
    pub idle_transaction_timeout_s: u64,
    /// Transaction mode: sessions of one tenant that may keep a server connection for their
    /// session state (SET, LISTEN, temporary tables…) at once; more get SQLSTATE 53300 for the
    /// statement instead. 0: no limit.
    pub max_pinned_per_tenant: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::Session,
            size: 20,
            min_idle: 0,
            acquire_timeout_ms: 5000,
            max_waiting_clients: 10_000,
            idle_timeout_s: 600,
            max_lifetime_s: 3600,
            max_prepared_statements: 200,
            idle_transaction_timeout_s: 0,
            max_pinned_per_tenant: 5,
        }
    }
}

/// `[jwt]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Allowed `alg` values; anything else is rejected.
    pub algorithms: Vec<String>,
    /// HMAC secret (HS*).
    pub secret: Option<String>,
    /// File holding the HMAC secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS*, PS*, ES*, EdDSA).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document; the token's `kid` selects the key.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS fetched over HTTPS (never plain HTTP: the keys decide who is which tenant),
    /// cached per the server's `Cache-Control`/`Expires`, refreshed in the background and,
    /// rate-limited, when a token names an unknown `kid`. The first fetch must succeed at start.
    pub jwks_url: Option<String>,
    /// PEM CA bundle that verifies `jwks_url`'s server (a private CA); unset: the system's roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Fewest seconds between two fetches of `jwks_url` (the unknown-`kid` rate limit, and the
    /// floor of the server's max-age).
    pub jwks_min_refresh_s: u64,
    /// Longest the `jwks_url` key set is cached (the ceiling of the server's max-age, and the
    /// lifetime when it sends no cache headers): how long a removed key may still be accepted.
    pub jwks_max_age_s: u64,
    /// PEM private key, used only by `rlsproxy token` to mint development tokens.
    pub private_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Claim path of the tenant claim (string or integer; see `auth::path`).
    pub tenant_claim: String,
    /// Which tenant values are accepted: `text` (any), `integer` and `uuid` (their canonical
    /// spelling only), or a regular expression the whole value must match.
    pub tenant_format: String,
    /// Claim path of the role claim; empty: roles are not used.
    pub role_claim: String,
    /// Roles a token may select.
    pub allowed_roles: Vec<String>,
    /// Reject tokens without `exp` (a token that never expires cannot be revoked).
    pub require_exp: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: None,
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            jwks_min_refresh_s: 30,
            jwks_max_age_s: 3600,
            private_key_file: None,
            issuer: None,
            audience: None,
            leeway_s: 30,
            tenant_claim: "tenant_id".into(),
            tenant_format: "text".into(),
            role_claim: String::new(),
            allowed_roles: Vec::new(),
            require_exp: true,
        }
    }
}

/// `[context]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Setting that receives the tenant claim.
    pub tenant_setting: String,
    /// Setting that receives the whole claims JSON; empty: not set.
    pub claims_setting: String,
    /// Strict mode: also set `rlsproxy.signed_context` to a value signed with HMAC-SHA256 that
    /// strict policies verify in the database (migrations/0003_strict_mode.sql), so that no SQL
    /// can forge a tenant.
    pub strict: bool,
    /// Key id of `strict_key` in `rlsproxy_private.keys`.
    pub strict_kid: String,
    /// The HMAC key, hex (at least 32 bytes).
    pub strict_key: Option<String>,
    /// File holding the HMAC key, hex.
    pub strict_key_file: Option<PathBuf>,
    /// Parse and close the injection statements in every transaction, so that no client
    /// statement sees them in `pg_prepared_statements`, at the cost of a Parse per transaction.
    pub hide_injection: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            tenant_setting: "app.current_tenant".into(),
            claims_setting: String::new(),
            strict: false,
            strict_kid: String::new(),
            strict_key: None,
            strict_key_file: None,
            hide_injection: false,
        }
    }
}

/// `[guard]`: what client SQL is refused (see `policy::guard`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Check every Query, Parse and FunctionCall.
    pub enabled: bool,
    /// Settings no client may SET or RESET, by prefix (the tenant, claims and role settings
    /// are always protected).
    pub protected_prefixes: Vec<String>,
    /// Functions that run SQL text the guard cannot see, or read a relation given by OID
    /// (which a computed name can reach past `forbidden_objects`); a trailing `*` matches a
    /// prefix. `tests/attacks` lists every such function of the contrib extensions and fails
    /// when one is missing here.
    pub sql_functions: Vec<String>,
    /// Relations and functions no client may name: they show or touch other sessions, which
    /// all run as the proxy's role.
    pub forbidden_objects: Vec<String>,
    /// Role-claim values of operator tokens (e.g. migrations through the proxy).
    pub operator_roles: Vec<String>,
    /// Rules operator tokens are exempt from: do, create_function, explain, create_trigger,
    /// grant, alter_role, lock, server_file, alter_settings, discard, reset_all, sql_function,
    /// function_call, notify_channel, advisory_lock… Tenant tokens never are.
    pub operator_allows: Vec<String>,
    /// Let every token use large objects (`lo_*` functions, fast-path calls, pg_largeobject).
    /// They have no row-level security and all belong to the proxy's role: NOT isolated
    /// between tenants.
    pub allow_large_objects: bool,
    /// Longest SQL text the guard parses; longer is refused (SQLSTATE 54000) unparsed.
    #[serde(deserialize_with = "super::size::deserialize")]
    pub max_statement_bytes: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            protected_prefixes: vec!["rlsproxy.".into(), "request.jwt.".into()],
            sql_functions: [
                "query_to_xml*",
                "table_to_xml*",
                "schema_to_xml*",
                "database_to_xml*",
                "cursor_to_xml*",
                "ts_stat",
                "ts_rewrite",
                "dblink*",
                "crosstab*",
                "connectby",
                "xpath_table",
                "check_primary_key",
                "check_foreign_key",
            ]
            .map(String::from)
            .to_vec(),
            forbidden_objects: [
                "pg_stat_activity",
                "pg_stat_get_activity",
                "pg_stat_get_backend_activity",
                "pg_stat_statements",
                "pg_cancel_backend",
                "pg_terminate_backend",
            ]
            .map(String::from)
            .to_vec(),
            operator_roles: Vec::new(),
            operator_allows: vec!["do".into(), "create_function".into()],
            allow_large_objects: false,
            max_statement_bytes: 1 << 20,
        }
    }
}

/// `[doctor]`: what `rlsproxy doctor` (and the same audit at start-up) looks at.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DoctorConfig {
    /// Column that holds the tenant in tenant tables: a table with it is expected to have
    /// forced row-level security, a tenant policy for every command and an index on it.
    pub tenant_column: String,
    /// Schemas to audit; empty: every schema but the system ones (`pg_*`, information_schema).
    pub schemas: Vec<String>,
}

impl Default for DoctorConfig {
    fn default() -> Self {
        Self { tenant_column: "tenant_id".into(), schemas: Vec::new() }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".into(), format: LogFormat::Text }
    }
}

/// `[reload]`: when the configuration is read again (SIGHUP always does it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Seconds between checks of the configuration file and every file it names (by content),
    /// reloading when one changed; 0: only SIGHUP reloads. Kubernetes updates mounted
    /// ConfigMaps and Secrets without sending any signal: this is how a pod sees them.
    pub watch_interval_s: u64,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message the proxy buffers whole (client Query, Parse, Bind…; server messages
    /// other than rows, COPY data and function results); bigger is refused.
    #[serde(deserialize_with = "super::size::deserialize")]
    pub max_message_bytes: usize,
    /// Time a client has to finish startup and authentication.
    pub handshake_timeout_ms: u64,
    /// Bytes of large client messages (over 64 KiB) buffered at once over all sessions; a
    /// session whose message would pass it ends (53200): many sessions each sending a
    /// maximum-size message must not exceed the process's memory limit and end them all.
    #[serde(deserialize_with = "super::size::deserialize")]
    pub max_buffered_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_message_bytes: 64 << 20, handshake_timeout_ms: 10_000, max_buffered_bytes: 256 << 20 }
    }
}

/// `[tcp]`: finding dead peers on client and server sockets alike (as PgBouncer's `tcp_*`).
/// Without it a peer that vanished without a FIN (a dropped network, a killed VM) holds its
/// session, its server connection and its locks for the kernel's 15 minutes or more.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Seconds a connection is idle before the first keepalive probe; 0: no keepalive.
    pub keepalive_idle_s: u64,
    /// Seconds between keepalive probes.
    pub keepalive_interval_s: u64,
    /// Unanswered probes after which the connection is dropped.
    pub keepalive_count: u32,
    /// Milliseconds that sent data may stay unacknowledged before the connection is dropped
    /// (`TCP_USER_TIMEOUT`); 0: the kernel's retransmission limit (about 15 minutes).
    pub user_timeout_ms: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self { keepalive_idle_s: 30, keepalive_interval_s: 10, keepalive_count: 3, user_timeout_ms: 60_000 }
    }
}
