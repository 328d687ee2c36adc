//! The doctor's test fixtures: a database with one mistake of each kind (next to objects built
//! right), configuration files for the test cluster, and `rlsproxy doctor` run as a
//! subprocess with its JSON report reduced to (check, severity, object).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{self, Postgres};

pub const BIN: &str = env!("CARGO_BIN_EXE_rlsproxy");

/// The tenant policies of a well-built table, by command.
pub fn policy(table: &str, cmd: &str) -> String {
    let tenant = "tenant_id = current_setting('app.current_tenant')::integer";
    let clauses = match cmd {
        "SELECT" | "DELETE" => format!("USING ({tenant})"),
        "INSERT" => format!("WITH CHECK ({tenant})"),
        _ => format!("USING ({tenant}) WITH CHECK ({tenant})"),
    };
    format!("CREATE POLICY p_{} ON {table} FOR {cmd} {clauses};\n", cmd.to_lowercase())
}

/// Row-level security and tenant policies of table `name`, right except where told: `rls` is
/// what follows `ALTER TABLE name` (nothing, ENABLE, FORCE), `commands` the commands it gets
/// a tenant policy for, `index` whether an index leads with tenant_id.
pub fn secure(name: &str, rls: &[&str], commands: &[&str], index: bool) -> String {
    let mut sql = String::new();
    for r in rls {
        sql += &format!("ALTER TABLE {name} {r} ROW LEVEL SECURITY;\n");
    }
    for cmd in commands {
        sql += &policy(name, cmd);
    }
    if index {
        sql += &format!("CREATE INDEX ON {name} (tenant_id);\n");
    }
    sql
}

/// A new tenant table, secured by [`secure`].
pub fn tenant_table(name: &str, rls: &[&str], commands: &[&str], index: bool) -> String {
    let create = format!("CREATE TABLE {name} (id serial PRIMARY KEY, tenant_id integer NOT NULL, body text);\n");
    create + &secure(name, rls, commands, index)
}

pub const ALL: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];
pub const RLS: [&str; 2] = ["ENABLE", "FORCE"];

/// Every mistake the doctor looks for, once, next to objects built right (which must give
/// no finding): run as the superuser in a fresh database `db`.
pub fn mistakes_sql(db: &str) -> String {
    let mut sql = format!("CREATE DATABASE {db};\n\\connect {db}\nSET client_min_messages = warning;\n");
    sql += &tenant_table("clean", &RLS, &ALL, true);
    sql += &tenant_table("no_rls", &[], &ALL, true);
    sql += &tenant_table("not_forced", &["ENABLE"], &ALL, true);
    sql += &tenant_table("no_delete_policy", &RLS, &ALL[..3], true);
    sql += &tenant_table("open_policy", &RLS, &ALL, true);
    sql += "CREATE POLICY open ON open_policy FOR SELECT USING (tenant_id > 0);\n";
    sql += &tenant_table("no_index", &RLS, &ALL, false);
    sql += &tenant_table("proxy_owned", &["ENABLE"], &ALL, true);
    sql += "ALTER TABLE proxy_owned OWNER TO app_proxy;\n";
    sql += "CREATE TABLE lookup (id integer PRIMARY KEY, name text);\n";
    // A schema every tenant may create in (a tenant-free schema, nothing else wrong with it).
    sql += "CREATE SCHEMA scratch;\nGRANT CREATE ON SCHEMA scratch TO app_proxy;\n";
    // Partitions without RLS, reachable only through their parent (no grants): no finding.
    sql += "CREATE TABLE parted (id integer, tenant_id integer NOT NULL) PARTITION BY LIST (tenant_id);\n";
    sql += &tenant_table("parted", &RLS, &ALL, true)
        .replace("CREATE TABLE parted (id serial PRIMARY KEY, tenant_id integer NOT NULL, body text);\n", "");
    sql += "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1);\n";
    sql += "
        CREATE VIEW leaky_view AS SELECT * FROM clean;
        CREATE VIEW safe_view WITH (security_invoker = on) AS SELECT * FROM clean;
        CREATE VIEW lookup_view AS SELECT * FROM lookup;
        CREATE MATERIALIZED VIEW mv_all AS SELECT * FROM clean;
        CREATE FUNCTION count_all() RETURNS bigint LANGUAGE sql SECURITY DEFINER
            AS $$ SELECT count(*) FROM public.clean $$;
        CREATE FUNCTION atomic_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER
            BEGIN ATOMIC SELECT count(*) FROM clean; END;
        CREATE FUNCTION count_mine() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM clean $$;
        CREATE FUNCTION lookup_names() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
            AS $$ SELECT name FROM lookup $$;
        CREATE FUNCTION set_tenant(t text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
            AS $$ BEGIN PERFORM set_config('app.current_tenant', t, false); END $$;
        CREATE FUNCTION hidden_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER
            AS $$ SELECT count(*) FROM clean $$;
        REVOKE EXECUTE ON FUNCTION hidden_count() FROM PUBLIC;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_proxy;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_proxy;
        REVOKE ALL ON parted_1 FROM app_proxy;
    ";
    sql
}

/// Runs `sql` with psql as the superuser (statement by statement, stopping at the first error).
pub fn superuser_sql(db: &str, sql: &str) {
    let mut child = common::postgres()
        .superuser_psql(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("write SQL");
    let out = child.wait_with_output().expect("psql");
    assert!(out.status.success(), "psql failed:\n{}\n{sql}", String::from_utf8_lossy(&out.stderr));
}

/// Database `doctor_mistakes` and the roles tokens may select in [`mistakes_config`]:
/// one with BYPASSRLS, one the proxy's user is no member of. Built once per test binary.
pub fn mistakes_db() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let roles = "CREATE ROLE doctor_bypass NOLOGIN BYPASSRLS;\n\
                     CREATE ROLE doctor_stranger NOLOGIN;\n\
                     GRANT doctor_bypass TO app_proxy;\n";
        superuser_sql("postgres", &(roles.to_string() + &mistakes_sql("doctor_mistakes")));
    });
    "doctor_mistakes"
}

/// A config file for the test cluster: `user` logs in to `database`; `extra` is appended.
pub fn config(dir: &tempfile::TempDir, database: &str, user: (&str, &str), extra: &str) -> PathBuf {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n\
         [upstream]\nport = {}\ndatabase = \"{database}\"\nuser = \"{}\"\npassword = \"{}\"\nsslmode = \"disable\"\n\n\
         [jwt]\nsecret = \"{}\"\n{extra}",
        common::postgres().port(),
        user.0,
        user.1,
        common::proxy::SECRET
    );
    let path = dir.path().join("rlsproxy.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn proxy_user() -> (&'static str, &'static str) {
    (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD)
}

pub fn mistakes_config(dir: &tempfile::TempDir) -> PathBuf {
    let roles = "role_claim = \"role\"\nallowed_roles = [\"doctor_bypass\", \"doctor_stranger\"]\n";
    config(dir, mistakes_db(), proxy_user(), roles)
}

/// Runs `rlsproxy doctor --config path` with `args`: (exit code, stdout, stderr).
pub fn doctor(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["doctor", "--config", path.to_str().expect("utf8")])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rlsproxy doctor");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The JSON report of `path` and its exit code.
pub fn doctor_json(path: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let (code, stdout, stderr) = doctor(path, &[&["--format", "json"], args].concat());
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (code, value)
}

/// (check, severity, object) of every finding, in report order.
pub fn summary(report: &Value) -> Vec<(String, String, String)> {
    let field = |f: &Value, k: &str| f[k].as_str().unwrap_or_else(|| panic!("finding without {k}: {f}")).to_string();
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| (field(f, "check"), field(f, "severity"), field(f, "object")))
        .collect()
}

pub fn expected(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter().map(|(c, s, o)| (c.to_string(), s.to_string(), o.to_string())).collect()
}

/// What a database without `migrations/0004_session_isolation.sql` gives: tenant roles may
/// read and cancel other sessions and see their locks (in report order). Not limited by
/// `[doctor] schemas`.
pub const SESSION_MISTAKES: [(&str, &str, &str); 7] = [
    ("other_sessions_visible", "error", "function pg_catalog.pg_cancel_backend(integer)"),
    ("other_sessions_visible", "error", "function pg_catalog.pg_lock_status()"),
    ("other_sessions_visible", "error", "function pg_catalog.pg_stat_get_activity(integer)"),
    ("other_sessions_visible", "error", "function pg_catalog.pg_stat_get_backend_activity(integer)"),
    ("other_sessions_visible", "error", "function pg_catalog.pg_terminate_backend(integer, bigint)"),
    ("other_sessions_visible", "error", "view pg_catalog.pg_locks"),
    ("other_sessions_visible", "error", "view pg_catalog.pg_stat_activity"),
];

/// The findings of the objects of [`mistakes_sql`], in report order (group, object, check).
pub const TABLE_MISTAKES: [(&str, &str, &str); 19] = [
    SESSION_MISTAKES[0],
    SESSION_MISTAKES[1],
    SESSION_MISTAKES[2],
    SESSION_MISTAKES[3],
    SESSION_MISTAKES[4],
    ("schema_create_privilege", "error", "schema scratch"),
    SESSION_MISTAKES[5],
    SESSION_MISTAKES[6],
    ("tenant_index_missing", "warning", "table public.no_index"),
    ("rls_disabled", "error", "table public.no_rls"),
    ("rls_not_forced", "warning", "table public.not_forced"),
    ("tenant_role_owns_table", "error", "table public.proxy_owned"),
    ("policy_without_tenant", "error", "policy open on public.open_policy"),
    ("policy_missing", "warning", "table public.no_delete_policy"),
    ("materialized_view_over_rls", "error", "materialized view public.mv_all"),
    ("view_not_security_invoker", "error", "view public.leaky_view"),
    ("security_definer_reads_rls_table", "error", "function public.atomic_count()"),
    ("security_definer_reads_rls_table", "error", "function public.count_all()"),
    ("function_calls_set_config", "error", "function public.set_tenant(text)"),
];
