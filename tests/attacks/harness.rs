//! The configurations under attack, the strict-mode table, and the verdict on each run: no
//! tenant-2 data in anything the client received, the session still tenant 1's (rows,
//! tenant, role), tenant 2's rows unchanged, and the guard's refusal where one is due.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rlsproxy::config::PoolMode;
use rlsproxy::policy::strict;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_postgres::Client;

use crate::Expect;
use crate::common::proxy::{self, TestProxy};
use crate::common::{Postgres, postgres};
use crate::session::{Protocol, Session, Transcript};

/// The role whose policy on the strict table gives every row (bound to the signed role).
pub const ADMIN_ROLE: &str = "admin_role";
/// Key id of the strict-mode key.
pub const KID: &str = "attack_k1";
/// The strict-mode key (only the proxy and `rlsproxy_private.keys` hold it).
const KEY: [u8; 32] = [0x3c; 32];
/// Table under strict policies: a copy of documents 1..5.
pub const STRICT_TABLE: &str = "attack_docs";
/// A schema the proxy's role owns (so may CREATE in): objects there are shared by every tenant.
pub const SCRATCH: &str = "attack_scratch";
/// Tenant 1's titles, by id (in documents and in the strict table).
pub const ACME: [&str; 3] = ["acme roadmap", "acme payroll", "acme onboarding"];
/// Text that only tenant 2's rows (documents, tenants, users) or the strict key contain.
const MARKERS: [&str; 3] = ["globex", "beatrice", "3c3c3c3c3c3c3c3c"];
/// The context as strict mode sees it: the plain setting, and the verified tenant and role.
const STRICT_CONTEXT: &str =
    "SELECT current_setting('app.current_tenant'), rlsproxy.tenant(), coalesce(rlsproxy.role(), '(none)')";
const RESERVED: &str = "statement and portal names starting with \"rlsproxy_\" are reserved by rlsproxy";

/// A configuration under attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Session pooling, statement guard on.
    Session,
    /// Transaction pooling (pool of 2), statement guard on.
    Transaction,
    /// Session pooling, guard off, strict mode on; the strict table is attacked.
    Strict,
    /// Transaction pooling (pool of 2, as `Transaction`), guard off, strict mode on; the
    /// strict table is attacked.
    StrictTransaction,
    /// Session pooling, guard off, strict mode off: nothing stops an attack (the control).
    Open,
}

impl Mode {
    /// In the order they run (the strict ones last: they may leave role defaults behind for
    /// a moment).
    pub const ALL: [Mode; 4] = [Mode::Session, Mode::Transaction, Mode::Strict, Mode::StrictTransaction];

    /// For the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Session => "session mode, guard on",
            Mode::Transaction => "transaction mode, guard on",
            Mode::Strict => "session mode, guard off, strict on",
            Mode::StrictTransaction => "transaction mode, guard off, strict on",
            Mode::Open => "session mode, guard off, strict off",
        }
    }

    /// With the statement guard on.
    pub fn guarded(self) -> bool {
        matches!(self, Mode::Session | Mode::Transaction)
    }

    /// Strict mode on (and the guard off).
    pub fn strict(self) -> bool {
        matches!(self, Mode::Strict | Mode::StrictTransaction)
    }
}

/// Once per process: 0003 applied again (idempotent), the key, the strict table (with an
/// admin policy that strict mode binds to the signed role), every contrib extension, a
/// schema the proxy's role may CREATE in (a deployment mistake an attacker would use),
/// statistics, and tenant 2's large object.
pub fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(prepare_database);
}

fn prepare_database() {
    let migration = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");
    superuser_psql(&["-f", migration]);
    let sql = format!(
        "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{KID}', '\\x{key}')
             ON CONFLICT (kid) DO UPDATE SET secret = excluded.secret;
         CREATE TABLE IF NOT EXISTS {STRICT_TABLE} (
             id integer PRIMARY KEY, tenant_id integer NOT NULL, title text NOT NULL, body text);
         INSERT INTO {STRICT_TABLE} SELECT id, tenant_id, title, body FROM documents WHERE id <= 5
             ON CONFLICT (id) DO NOTHING;
         DROP POLICY IF EXISTS admin_bypass ON {STRICT_TABLE};
         CREATE POLICY admin_bypass ON {STRICT_TABLE} FOR ALL TO admin_role USING (true) WITH CHECK (true);
         SELECT rlsproxy.enable_strict_policies('{STRICT_TABLE}');
         GRANT SELECT, INSERT, UPDATE, DELETE ON {STRICT_TABLE} TO app_proxy, admin_role;
         CREATE SCHEMA IF NOT EXISTS {SCRATCH} AUTHORIZATION app_proxy;
         ANALYZE documents; ANALYZE {STRICT_TABLE};
         SELECT lo_from_bytea({lo}, 'globex secret plan')
             WHERE NOT EXISTS (SELECT FROM pg_largeobject_metadata WHERE oid = {lo});
         ALTER LARGE OBJECT {lo} OWNER TO app_proxy;",
        key = hex(&KEY),
        lo = crate::routes::LARGE_OBJECT_OID,
    );
    superuser_psql(&["-c", &sql]);
    install_every_extension();
}

/// Creates every extension the server offers that needs no `shared_preload_libraries` (all of
/// contrib, trusted or not: the worst case of what a database owner or superuser installs),
/// each in its own transaction; panics unless the ones that run SQL given as text are there.
/// (pg_stat_statements needs the preload: without it, its view raises for everyone.)
fn install_every_extension() {
    let sql = "DO $$
        DECLARE ext text;
        BEGIN
            FOR ext IN SELECT name FROM pg_available_extensions
                       WHERE installed_version IS NULL AND name <> 'pg_stat_statements' ORDER BY name LOOP
                BEGIN
                    EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I CASCADE', ext);
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'extension % not created: %', ext, SQLERRM;
                END;
            END LOOP;
        END $$";
    superuser_psql(&["-c", sql]);
    let out = postgres()
        .superuser_psql(Postgres::APP_DB)
        .args(["-At", "-c", "SELECT string_agg(extname, ' ' ORDER BY extname) FROM pg_extension"])
        .output()
        .expect("list extensions");
    let installed = String::from_utf8_lossy(&out.stdout).into_owned();
    for needed in ["dblink", "hstore", "pgcrypto", "postgres_fdw", "refint", "tablefunc", "xml2"] {
        assert!(installed.split_whitespace().any(|e| e == needed), "{needed} is not installed: {installed}");
    }
}

fn superuser_psql(args: &[&str]) {
    let out = postgres().superuser_psql(Postgres::APP_DB).args(args).output().expect("run psql");
    assert!(out.status.success(), "psql {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One configuration: its proxy, a superuser, and the verdicts so far.
pub struct Env {
    /// The configuration.
    pub mode: Mode,
    /// Held for the environment's life, one or the other: see [`ROLE_STATE`].
    _shared_role: Option<RwLockReadGuard<'static, ()>>,
    _exclusive_role: Option<RwLockWriteGuard<'static, ()>>,
    /// The proxy under attack.
    pub proxy: TestProxy,
    /// Superuser on `app`, to check tenant 2's rows and clean up.
    pub su: Client,
    baseline: Vec<String>,
    /// Attempts run (attempt × protocol).
    pub runs: usize,
    /// What got through or misbehaved, one line each.
    pub failures: Vec<String>,
}

/// The proxy's role is shared by every test of this binary. With the guard off, attempts
/// such as `ALTER ROLE app_proxy SET …` succeed until the judge resets them, and meanwhile
/// the proxy (rightly) refuses new server connections for that role: the strict
/// configurations run alone, the others side by side.
static ROLE_STATE: RwLock<()> = RwLock::const_new(());

/// Shared use of the proxy's role, for a test that starts its own proxy: held to its end.
pub async fn shared_role() -> RwLockReadGuard<'static, ()> {
    ROLE_STATE.read().await
}

impl Env {
    /// Starts the proxy for `mode` and records tenant 2's rows.
    pub async fn start(mode: Mode) -> Env {
        Self::start_with_pool(mode, 2).await
    }

    /// [`Env::start`] with `pool_size` server connections in transaction pooling (1: every
    /// transaction of every tenant on one server connection).
    pub async fn start_with_pool(mode: Mode, pool_size: usize) -> Env {
        let (_shared_role, _exclusive_role) =
            if mode.strict() { (None, Some(ROLE_STATE.write().await)) } else { (Some(shared_role().await), None) };
        let mut cfg = proxy::base_config(postgres());
        match mode {
            Mode::Session => {}
            Mode::Transaction => {
                cfg.pool.mode = PoolMode::Transaction;
                cfg.pool.size = pool_size;
            }
            Mode::Strict | Mode::StrictTransaction => {
                if mode == Mode::StrictTransaction {
                    cfg.pool.mode = PoolMode::Transaction;
                    cfg.pool.size = pool_size;
                }
                cfg.guard.enabled = false;
                cfg.context.strict = true;
                cfg.context.strict_kid = KID.into();
                cfg.context.strict_key = Some(hex(&KEY));
                // Tokens may name admin_role (the proxy then sets and signs it).
                cfg.jwt.role_claim = "role".into();
                cfg.jwt.allowed_roles = vec![ADMIN_ROLE.into()];
            }
            Mode::Open => cfg.guard.enabled = false,
        }
        let proxy = proxy::start(cfg).await;
        let su = postgres().superuser_client(Postgres::APP_DB).await;
        let baseline = tenant_two_rows(&su).await;
        assert!(baseline.len() >= 5, "tenant 2's rows: {baseline:?}");
        Env { mode, _shared_role, _exclusive_role, proxy, su, baseline, runs: 0, failures: Vec::new() }
    }

    /// The table under attack.
    pub fn docs(&self) -> &'static str {
        if self.mode.strict() { STRICT_TABLE } else { "documents" }
    }

    /// A context value for tenant 2, signed under the right key id with a wrong key.
    pub fn forged(&self) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
        strict::sign(KID, &[0x99; 32], "2", None, exp)
    }

    /// Parameters of the proxy's injection statement that would set tenant 2.
    pub fn ctx_params(&self) -> Vec<String> {
        let mut p = vec!["app.current_tenant".to_string(), "2".into()];
        if self.mode.strict() {
            p.extend(["role".to_string(), ADMIN_ROLE.into(), strict::DEFAULT_SETTING.into(), self.forged()]);
        }
        p
    }

    /// `sql` with `{docs}`, `{ctx_args}` and `{forged}` filled in.
    pub fn render(&self, sql: &str) -> String {
        let args: Vec<String> = self.ctx_params().iter().map(|p| format!("'{p}'")).collect();
        sql.replace("{docs}", self.docs()).replace("{ctx_args}", &args.join(", ")).replace("{forged}", &self.forged())
    }

    /// `[configuration | protocol] attempt`.
    pub fn label(&self, attempt: &str, protocol: &str) -> String {
        format!("[{} | {protocol}] {attempt}", self.mode.name())
    }

    /// A fresh tenant-1 session.
    pub async fn session(&self, protocol: Protocol) -> Session {
        Session::open(&self.proxy, &self.proxy.token("1"), protocol).await
    }

    /// Records a failure.
    pub fn fail(&mut self, label: &str, what: impl std::fmt::Display) {
        self.failures.push(format!("{label}: {what}"));
    }

    /// The verdict on one run: `reply` is what the attempt received, `session` (if the
    /// client got one) is probed, tenant 2's rows are compared with the superuser's record.
    pub async fn judge(
        &mut self,
        label: &str,
        expect: Option<Expect>,
        reply: &Transcript,
        session: Option<&mut Session>,
    ) {
        self.runs += 1;
        if let Some(leak) = leaked(&reply.texts) {
            self.fail(label, format!("the attempt received tenant-2 data: {leak:?}"));
        }
        if let Some(problem) = expect.filter(|_| self.mode.guarded()).and_then(|e| unmet(e, reply)) {
            self.fail(label, problem);
        }
        if let Some(session) = session {
            for problem in self.probe(session).await {
                self.fail(label, problem);
            }
        }
        let now = tenant_two_rows(&self.su).await;
        if now != self.baseline {
            let was = std::mem::replace(&mut self.baseline, now.clone());
            self.fail(label, format!("tenant 2's rows changed: {was:?} -> {now:?}"));
        }
        if self.mode.strict() {
            // ALTER ROLE … SET succeeds with the guard off; undo it for the next attempts.
            let reset = "ALTER ROLE app_proxy RESET ALL; ALTER ROLE app_proxy IN DATABASE app RESET ALL";
            self.su.batch_execute(reset).await.expect("reset role defaults");
        }
    }

    /// With the guard on, a refusal inside an explicit block fails the block as PostgreSQL
    /// would: what follows gets 25P02 until the block ends, and COMMIT rolls back.
    pub fn check_block_failed(&mut self, label: &str, expect: Expect, reply: &Transcript) {
        let refusal = matches!(expect, Expect::Guard(_) | Expect::Reserved);
        let refused = reply.errors.first().is_some_and(|e| matches!(e.code.as_str(), "42501" | "42601"));
        if self.mode.guarded() && refusal && refused && !reply.errors.iter().any(|e| e.code == "25P02") {
            self.fail(label, "the refusal did not fail the transaction block: the statements after it ran");
        }
    }

    /// In the same session: the table's rows and the context, as the attacker now sees them.
    async fn probe(&self, session: &mut Session) -> Vec<String> {
        let mut problems = Vec::new();
        let protocol = session.probe_protocol();
        let mut rows = Transcript::default();
        session.run(protocol, &format!("SELECT title FROM {} ORDER BY id", self.docs()), &mut rows).await;
        if let Some(leak) = leaked(&rows.texts) {
            problems.push(format!("the probe then read tenant-2 data: {leak:?}"));
        }
        let (ctx_sql, expected): (&str, &[&str]) = match self.mode {
            Mode::Strict | Mode::StrictTransaction => (STRICT_CONTEXT, &["1", "1", "(none)"]),
            _ => ("SELECT current_setting('app.current_tenant'), current_user::text", &["1", "app_proxy"]),
        };
        let mut ctx = Transcript::default();
        session.run(protocol, ctx_sql, &mut ctx).await;
        let seen: Vec<String> =
            ctx.rows.first().map(|r| r.iter().map(|c| c.clone().unwrap_or_default()).collect()).unwrap_or_default();
        let titles = rows.first_column();
        let rows_ok = !rows.closed && rows.errors.is_empty();
        let ctx_ok = !ctx.closed && ctx.errors.is_empty();
        if self.mode.guarded() {
            // The session goes on after a refusal, in tenant 1's context and the proxy's role.
            if !rows_ok || !ctx_ok {
                problems.push(format!("the probe failed: {:?} {:?}", rows.errors, ctx.errors));
            } else if titles != ACME || seen != expected {
                problems.push(format!("the probe saw titles {titles:?}, context {seen:?}"));
            }
        } else if titles.iter().any(|t| !ACME.contains(&t.as_str())) || (ctx_ok && seen != expected) {
            // Strict mode may fail closed (no rows, an error), never open.
            problems.push(format!("the probe saw titles {titles:?}, context {seen:?}"));
        }
        problems
    }
}

/// The first text that contains tenant-2 data (or the strict key).
pub fn leaked(texts: &[String]) -> Option<&String> {
    texts.iter().find(|t| {
        let lower = t.to_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    })
}

/// Why a guarded configuration's answer is not `expect`, if it is not.
fn unmet(expect: Expect, reply: &Transcript) -> Option<String> {
    let first = reply.errors.first();
    // Text the guard cannot parse is refused with PostgreSQL's own syntax error (42601).
    let refused = |e: &crate::session::ServerError, rules: &[&str]| {
        e.code == "42501"
            && e.message.starts_with("rlsproxy refused the statement: ")
            && rules.iter().any(|r| e.message.ends_with(&format!("(rule {r})")))
            || e.code == "42601" && rules.contains(&"unparsable")
    };
    match expect {
        Expect::Guard(rules) if first.is_some_and(|e| refused(e, rules)) => None,
        Expect::Guard(rules) if rules.len() > 2 => {
            Some(format!("expected the guard's 42501 (any rule), got {first:?}"))
        }
        Expect::Guard(rules) => Some(format!("expected the guard's 42501 (rule {rules:?}), got {first:?}")),
        // The relay's own check (protocol names) or the guard's (names in SQL, however spelled).
        Expect::Reserved if first.is_some_and(|e| e.code == "42501" && e.message == RESERVED) => None,
        Expect::Reserved if first.is_some_and(|e| refused(e, &["reserved_name"])) => None,
        Expect::Reserved => Some(format!("expected 42501 for the reserved name, got {first:?}")),
        Expect::Allowed if first.is_none() && !reply.closed => None,
        Expect::Allowed => Some(format!("expected no error, got {first:?} (closed: {})", reply.closed)),
        Expect::Server => None,
    }
}

/// Tenant 2's rows everywhere (documents 4 and 5 wherever they went), as the superuser sees them.
async fn tenant_two_rows(su: &Client) -> Vec<String> {
    let sql = format!(
        "SELECT concat_ws('|', 'documents', id, tenant_id, title, body) FROM documents
             WHERE tenant_id = 2 OR id IN (4, 5)
         UNION ALL SELECT concat_ws('|', '{STRICT_TABLE}', id, tenant_id, title, body) FROM {STRICT_TABLE}
             WHERE tenant_id = 2 OR id IN (4, 5)
         UNION ALL SELECT concat_ws('|', 'users', id, tenant_id, name) FROM users WHERE tenant_id = 2 OR id IN (3, 4)
         UNION ALL SELECT concat_ws('|', 'tenants', id, name) FROM tenants WHERE id = 2
         ORDER BY 1"
    );
    su.query(&sql, &[]).await.expect("tenant 2's rows").iter().map(|r| r.get(0)).collect()
}
