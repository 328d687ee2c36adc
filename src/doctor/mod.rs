//! `rlsproxy doctor`: audits the database's row-level-security set-up as the proxy's own
//! user, through a tokio-postgres client on a socket the proxy's upstream code opens (same
//! `[upstream]` config, TLS and authentication: `upstream::catalog`), and reports each problem as a [`Finding`] with the SQL that fixes it.
//!
//! The proxy injects the tenant; whether that isolates anything depends on the database:
//! policies that read the setting, on every tenant table, forced, for every command, and
//! nothing that runs with someone else's rights around them. None of that is visible from
//! the wire, so the doctor reads the catalog. The same audit runs at start-up, where each
//! finding becomes a warning (start-up is refused only for what `policy::upstream_role`
//! already refuses).
//!
//! # Layout
//! - [`finding`]: the checks, their ids and groups, severities, findings.
//! - `roles`: the proxy's user and the roles tokens may select.
//! - `shared`: schemas tenants may create in, other sessions they may see.
//! - `tables`: RLS enabled and forced, owner, tenant index.
//! - `policies`: per role and command, the permissive/restrictive combination;
//!   `signed_role`: in strict mode, role policies that do not check the signed role.
//! - `views`, `functions`: what runs with another role's rights.
//! - `catalog`, `scan`: catalog access and the text heuristics the checks share.
//! - [`report`]: text and JSON output.
//!
//! The audit runs in one read-only repeatable-read transaction: one consistent snapshot of
//! the catalog (a migration running meanwhile cannot half-appear), and nothing written.

mod catalog;
pub mod finding;
mod functions;
mod policies;
pub mod report;
mod roles;
mod scan;
mod shared;
mod signed_role;
mod tables;
mod views;

pub use finding::{Check, Finding, Group, Severity};
pub use report::Report;

use crate::config::{Config, ConfigError};
use crate::upstream::{UpstreamError, UpstreamTarget, catalog as client};
use catalog::Param;

/// Why the doctor could not audit (exit code 2): never a finding.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The configuration (or a file it names) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Neither `upstream.database` nor `--database` says which database to audit.
    #[error("no database to audit: set upstream.database or pass --database")]
    NoDatabase,
    /// Connecting or authenticating failed.
    #[error("cannot connect to {host}:{port} database {database} as {user}: {source}")]
    Connect {
        /// upstream.host
        host: String,
        /// upstream.port
        port: u16,
        /// The database audited.
        database: String,
        /// upstream.user
        user: String,
        /// Why.
        source: UpstreamError,
    },
    /// A catalog query failed.
    #[error("catalog query ({what}) failed: {source}")]
    Query {
        /// Which query.
        what: &'static str,
        /// The server's error.
        source: UpstreamError,
    },
    /// A catalog query answered something the doctor does not understand.
    #[error("unexpected answer to the catalog query ({what}): {detail}")]
    Catalog {
        /// Which query.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// What the audit needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Database to audit.
    pub database: String,
    /// `[doctor] tenant_column`.
    pub tenant_column: String,
    /// `[doctor] schemas` (empty: all non-system schemas).
    pub schemas: Vec<String>,
    /// `[context] tenant_setting`.
    pub tenant_setting: String,
    /// `[context] claims_setting` (may be empty).
    pub claims_setting: String,
    /// `[context] strict`: only strict mode's functions count as reading the tenant, and the
    /// fixes use them.
    pub strict: bool,
    /// `[jwt] allowed_roles`.
    pub allowed_roles: Vec<String>,
    /// `[guard] operator_roles`: not tenant roles, so not expected to be confined.
    pub operator_roles: Vec<String>,
}

impl Settings {
    /// From `config`; `database` overrides `upstream.database`.
    pub fn from_config(config: &Config, database: Option<&str>) -> Result<Self, DoctorError> {
        let database = database.map(str::to_string).or_else(|| config.upstream.database.clone());
        Ok(Self {
            database: database.ok_or(DoctorError::NoDatabase)?,
            tenant_column: config.doctor.tenant_column.clone(),
            schemas: config.doctor.schemas.clone(),
            tenant_setting: config.context.tenant_setting.clone(),
            claims_setting: config.context.claims_setting.clone(),
            strict: config.context.strict,
            allowed_roles: config.jwt.allowed_roles.clone(),
            operator_roles: config.guard.operator_roles.clone(),
        })
    }
}

/// The audit's inputs as the checks use them: the catalog queries' parameters (see
/// `catalog`) and what the fixes and heuristics need.
#[derive(Debug, Clone, Default)]
struct Params {
    /// `$1`: audited schemas.
    schemas: Vec<String>,
    /// `$2`.
    tenant_column: String,
    /// `$3`: tenant roles.
    roles: Vec<String>,
    tenant_setting: String,
    claims_setting: String,
    strict: bool,
    markers: scan::Markers,
}

impl Params {
    /// `[$1, $2, $3]`.
    fn all(&self) -> [Param<'_>; 3] {
        [&self.schemas, &self.tenant_column, &self.roles]
    }
}

/// Connects as the proxy's user and audits `settings.database`.
pub async fn run(config: &Config, database: Option<&str>) -> Result<Report, DoctorError> {
    let settings = Settings::from_config(config, database)?;
    let target = UpstreamTarget::from_config(&config.upstream, &config.tcp)?;
    let connect_error = |source| DoctorError::Connect {
        host: target.host.clone(),
        port: target.port,
        database: settings.database.clone(),
        user: target.user.clone(),
        source,
    };
    let catalog = client::connect(&target, &settings.database).await.map_err(connect_error)?;
    let findings = audit(&catalog.client, &settings).await;
    catalog.close().await;
    Ok(Report::new(settings.database, target.user.clone(), findings?))
}

/// Runs every check on `conn` ([`Report::new`] puts the findings in report order).
pub async fn audit(conn: &tokio_postgres::Client, settings: &Settings) -> Result<Vec<Finding>, DoctorError> {
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| DoctorError::Query { what: "BEGIN", source: client::from_client(e) })?;
    let mut findings = Vec::new();
    let roles = roles::audit(conn, settings, &mut findings).await?;
    let params = Params {
        schemas: settings.schemas.clone(),
        tenant_column: settings.tenant_column.clone(),
        roles: roles.all.clone(),
        tenant_setting: settings.tenant_setting.clone(),
        claims_setting: settings.claims_setting.clone(),
        strict: settings.strict,
        markers: scan::Markers::new(&settings.tenant_setting, &settings.claims_setting, settings.strict),
    };
    shared::audit(conn, &params, &roles, &mut findings).await?;
    let tables = tables::audit(conn, &params, &roles, &mut findings).await?;
    let policies = policies::audit(conn, &params, &roles, &tables, &mut findings).await?;
    if params.strict {
        let proxy = roles.all.first().map(String::as_str).unwrap_or_default();
        for table in &tables {
            let of_table = policies.get(&table.name).map(Vec::as_slice).unwrap_or_default();
            signed_role::findings(&table.name, of_table, proxy, &mut findings);
        }
    }
    views::audit(conn, &params, &mut findings).await?;
    functions::audit(conn, &params, &mut findings).await?;
    Ok(findings)
}

/// The start-up audit: logs each finding as a warning, or why the audit could not run.
/// Never fails: start-up refuses only what the upstream-role check refuses.
pub async fn log_findings(config: &Config) {
    if config.upstream.database.is_none() {
        tracing::info!("doctor: skipped, upstream.database is not set (run `rlsproxy doctor --database …`)");
        return;
    }
    match run(config, None).await {
        Ok(report) if report.findings.is_empty() => tracing::info!(database = %report.database, "doctor: no findings"),
        Ok(report) => {
            for f in &report.findings {
                let (check, severity, object, fix) = (f.check.id(), &f.severity, &f.object, &f.fix);
                tracing::warn!(check, %severity, %object, %fix, "doctor: {}", f.message);
            }
            tracing::warn!(
                database = %report.database,
                errors = report.count(Severity::Error),
                warnings = report.count(Severity::Warning),
                "doctor: row-level-security findings; `rlsproxy doctor` shows them with their fixes"
            );
        }
        Err(e) => tracing::warn!(error = %e, "doctor: could not audit the database"),
    }
}
