//! `rlsproxy doctor` as a subprocess against the test cluster: a database built with one
//! mistake of each kind gives exactly one finding per mistake (exit 1), applying the fixes it
//! prints makes it clean, the example database `app` is clean (exit 0), and a failed audit
//! (bad password, bad configuration) exits 2. The proxy logs the same findings at start-up.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is the report

mod common;
#[path = "doctor/fixtures.rs"]
mod fixtures;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Postgres;
use fixtures::*;

#[test]
fn each_mistake_gives_exactly_its_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, report) = doctor_json(&mistakes_config(&dir), &[]);
    assert_eq!(code, 1, "{report:#}");
    let mut want = expected(&[
        ("allowed_role_bypassrls", "error", "role doctor_bypass"),
        ("allowed_role_not_member", "warning", "role doctor_stranger"),
    ]);
    want.extend(expected(&TABLE_MISTAKES));
    assert_eq!(summary(&report), want, "{report:#}");
    assert_eq!((report["database"].as_str(), report["user"].as_str()), (Some("doctor_mistakes"), Some("app_proxy")));
    assert_eq!((report["errors"].as_u64(), report["warnings"].as_u64()), (Some(17), Some(4)));
    for f in report["findings"].as_array().expect("findings") {
        let (message, fix) = (f["message"].as_str().unwrap_or(""), f["fix"].as_str().unwrap_or(""));
        assert!(!message.is_empty() && fix.ends_with(';') && !fix.contains('\n'), "{f:#}");
    }
    let fix_of = |check: &str| {
        let f = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).unwrap();
        f["fix"].as_str().unwrap().to_string()
    };
    assert_eq!(fix_of("allowed_role_bypassrls"), "ALTER ROLE doctor_bypass NOBYPASSRLS;");
    // From PostgreSQL 16 on, the grant says that it does not inherit (the harness runs the newest installed).
    let grant = fix_of("allowed_role_not_member");
    let pg16 = "GRANT doctor_stranger TO app_proxy WITH INHERIT FALSE;";
    assert!(grant == "GRANT doctor_stranger TO app_proxy;" || grant == pg16, "{grant}");
    assert_eq!(fix_of("schema_create_privilege"), "REVOKE CREATE ON SCHEMA scratch FROM PUBLIC, app_proxy;");
    assert_eq!(
        fix_of("other_sessions_visible"),
        "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) FROM PUBLIC, app_proxy, doctor_stranger;"
    );
    assert_eq!(
        fix_of("policy_missing"),
        "CREATE POLICY tenant_isolation_delete ON public.no_delete_policy FOR DELETE \
         USING (tenant_id = current_setting('app.current_tenant')::integer);"
    );
}

#[test]
fn applying_the_fixes_makes_the_database_clean() {
    superuser_sql("postgres", &mistakes_sql("doctor_fixable"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, "doctor_fixable", proxy_user(), "");
    let (code, report) = doctor_json(&path, &[]);
    assert_eq!((code, summary(&report)), (1, expected(&TABLE_MISTAKES)), "{report:#}");
    let fixes: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["fix"].as_str().unwrap()).collect();
    superuser_sql("doctor_fixable", &(fixes.join("\n") + "\n"));
    let (code, report) = doctor_json(&path, &[]);
    assert_eq!((code, summary(&report)), (0, vec![]), "after the fixes {fixes:#?}:\n{report:#}");
}

#[test]
fn text_report_groups_findings_with_one_fix_line_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = doctor(&mistakes_config(&dir), &[]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "rlsproxy doctor: database doctor_mistakes, as app_proxy: 21 findings (17 errors, 4 warnings)"
    );
    let headings: Vec<&str> = lines.iter().copied().filter(|l| !l.is_empty() && !l.starts_with(' ')).skip(1).collect();
    assert_eq!(headings, ["Token roles", "Shared between tenants", "Tables", "Policies", "Views", "Functions"]);
    assert_eq!(stdout.matches("] fix: ").count(), 21, "{stdout}");
    assert!(
        stdout.contains(
            "  error   table public.no_rls: has the tenant column tenant_id but row-level security is not enabled"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "[rls_disabled] fix: ALTER TABLE public.no_rls ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
        ),
        "{stdout}"
    );
}

#[test]
fn the_example_database_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, Postgres::APP_DB, proxy_user(), "");
    let (code, report) = doctor_json(&path, &[]);
    assert_eq!((code, summary(&report)), (0, vec![]), "{report:#}");
    assert_eq!((report["errors"].as_u64(), report["warnings"].as_u64()), (Some(0), Some(0)));
    let (code, stdout, _) = doctor(&path, &[]);
    assert_eq!((code, stdout.as_str()), (0, "rlsproxy doctor: database app, as app_proxy: no findings\n"));
}

/// The doctor connects with the proxy's own upstream code: TLS with `verify-full` works as it
/// does for the pool (the test CA signs the server's certificate for 127.0.0.1).
#[test]
fn the_doctor_connects_over_verify_full_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, Postgres::APP_DB, proxy_user(), "");
    let ca = common::postgres().ca_cert_path();
    let tls = format!("sslmode = \"verify-full\"\nsslrootcert = \"{}\"\n", ca.display());
    let text = std::fs::read_to_string(&path).unwrap().replace("sslmode = \"disable\"\n", &tls);
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = doctor(&path, &[]);
    assert_eq!((code, stdout.as_str()), (0, "rlsproxy doctor: database app, as app_proxy: no findings\n"), "{stderr}");
}

/// With `jwt.allowed_roles = ["admin_role"]`, tokens may select the role whose policies are
/// `USING (true)` (admin_bypass): unless it is an operator role, that is every tenant's rows.
#[test]
fn an_allowed_role_with_open_policies_is_reported_unless_it_is_an_operator_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roles = "role_claim = \"role\"\nallowed_roles = [\"admin_role\"]\n";
    let (code, report) = doctor_json(&config(&dir, Postgres::APP_DB, proxy_user(), roles), &[]);
    let want = expected(&[
        ("policy_without_tenant", "error", "policy admin_bypass on public.documents"),
        ("policy_without_tenant", "error", "policy admin_bypass on public.users"),
    ]);
    assert_eq!((code, summary(&report)), (1, want), "{report:#}");
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("permissive policy (written TO admin_role) lets admin_role SELECT, INSERT"),
        "{message}"
    );

    let operator = format!("{roles}\n[guard]\noperator_roles = [\"admin_role\"]\n");
    let (code, report) = doctor_json(&config(&dir, Postgres::APP_DB, proxy_user(), &operator), &[]);
    assert_eq!((code, summary(&report)), (0, vec![]), "{report:#}");
}

/// In strict mode only the signed context counts: a policy on the unsigned setting is the
/// gap strict mode closes, and a policy for a role must check the signed role. The fixes use
/// `rlsproxy.tenant_id()` and `rlsproxy.role()` and make the database clean.
#[test]
fn strict_mode_counts_only_the_signed_context() {
    let strict_sql = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0003_strict_mode.sql");
    let sessions = strict_sql.with_file_name("0004_session_isolation.sql");
    let mut sql = format!(
        "CREATE DATABASE doctor_strict;\n\\connect doctor_strict\n\\i {}\n\\i {}\n",
        strict_sql.display(),
        sessions.display()
    );
    sql += &tenant_table("plain", &RLS, &ALL, true);
    sql += "CREATE TABLE signed (id serial PRIMARY KEY, tenant_id integer NOT NULL);\n\
            CREATE INDEX ON signed (tenant_id);\n\
            SELECT rlsproxy.enable_strict_policies('signed');\n\
            CREATE POLICY admin_all ON signed TO admin_role USING (true);\n\
            GRANT SELECT, INSERT, UPDATE, DELETE ON plain, signed TO app_proxy;\n";
    superuser_sql("postgres", &sql);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "00".repeat(32);
    let strict = format!("\n[context]\nstrict = true\nstrict_kid = \"k1\"\nstrict_key = \"{key}\"\n");
    let path = config(&dir, "doctor_strict", proxy_user(), &strict);
    let (code, report) = doctor_json(&path, &[]);
    let mut want = expected(&[("policy_role_not_signed", "error", "policy admin_all on public.signed")]);
    want.extend(
        ["p_delete", "p_insert", "p_select", "p_update"]
            .iter()
            .map(|p| ("policy_without_tenant".into(), "error".into(), format!("policy {p} on public.plain"))),
    );
    assert_eq!((code, summary(&report)), (1, want), "{report:#}");
    assert_eq!(
        report["findings"][0]["fix"],
        "ALTER POLICY admin_all ON public.signed USING ((true) AND (SELECT rlsproxy.role()) = current_user);"
    );
    assert_eq!(
        report["findings"][3]["fix"],
        "ALTER POLICY p_select ON public.plain USING (tenant_id = (SELECT rlsproxy.tenant_id()));"
    );
    let fixes: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["fix"].as_str().unwrap()).collect();
    superuser_sql("doctor_strict", &(fixes.join("\n") + "\n"));
    let (code, report) = doctor_json(&path, &[]);
    assert_eq!((code, summary(&report)), (0, vec![]), "{report:#}");
}

/// inherit_user inherits admin_role: its policies apply to every tenant (the proxy refuses
/// to start with it; the doctor says why, and which policies leak).
#[test]
fn an_inheriting_upstream_user_is_reported_with_the_policies_it_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = (Postgres::INHERIT_USER, Postgres::INHERIT_PASSWORD);
    let (code, report) = doctor_json(&config(&dir, Postgres::APP_DB, user, ""), &[]);
    let want = expected(&[
        ("proxy_user_inherits", "error", "role admin_role"),
        ("policy_without_tenant", "error", "policy admin_bypass on public.documents"),
        ("policy_without_tenant", "error", "policy admin_bypass on public.users"),
    ]);
    assert_eq!((code, summary(&report)), (1, want), "{report:#}");
    let fix = report["findings"][0]["fix"].as_str().unwrap();
    let pg16 = "GRANT admin_role TO inherit_user WITH INHERIT FALSE;";
    assert!(fix == "ALTER ROLE inherit_user NOINHERIT;" || fix == pg16, "{fix}");
}

/// What the start-up check refuses about the proxy's user is reported too, with fixes that
/// make the database clean: CREATEROLE, a server-file role through another role, a setting of
/// the role and one of the database, an allowed (operator) role that owns a table.
#[test]
fn a_risky_upstream_role_is_reported_and_the_fixes_make_it_clean() {
    let sessions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0004_session_isolation.sql");
    superuser_sql(
        "postgres",
        &format!(
            "CREATE ROLE doctor_risky LOGIN NOINHERIT CREATEROLE PASSWORD 'risky-pw';\n\
             CREATE ROLE doctor_files NOLOGIN;\nGRANT pg_read_server_files TO doctor_files;\n\
             GRANT doctor_files TO doctor_risky;\nALTER ROLE doctor_risky SET statement_timeout = '5s';\n\
             CREATE ROLE doctor_migrator NOLOGIN;\nGRANT doctor_migrator TO doctor_risky;\n\
             CREATE DATABASE doctor_risky;\nALTER DATABASE doctor_risky SET search_path = public, pg_catalog;\n\
             \\connect doctor_risky\n\\i {}\n\
             CREATE TABLE migrations_log (id integer);\nALTER TABLE migrations_log OWNER TO doctor_migrator;\n",
            sessions.display()
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // An operator role (not a tenant role) may still not own tables: the proxy can SET ROLE to it.
    let operator = "role_claim = \"role\"\nallowed_roles = [\"doctor_migrator\"]\n\n\
                    [guard]\noperator_roles = [\"doctor_migrator\"]\n";
    let path = config(&dir, "doctor_risky", ("doctor_risky", "risky-pw"), operator);
    let (code, report) = doctor_json(&path, &[]);
    let want = expected(&[
        ("proxy_user_settings", "error", "database doctor_risky"),
        ("proxy_user_createrole", "error", "role doctor_risky"),
        ("proxy_user_settings", "error", "role doctor_risky"),
        ("proxy_user_server_files", "error", "role pg_read_server_files"),
        ("allowed_role_owns_tables", "error", "role doctor_migrator"),
    ]);
    assert_eq!((code, summary(&report)), (1, want), "{report:#}");
    let fixes: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["fix"].as_str().unwrap()).collect();
    assert_eq!(
        fixes,
        [
            "ALTER DATABASE doctor_risky RESET search_path;",
            "ALTER ROLE doctor_risky NOCREATEROLE;",
            "ALTER ROLE doctor_risky RESET statement_timeout;",
            "REVOKE doctor_files FROM doctor_risky;",
            "ALTER TABLE migrations_log OWNER TO postgres;"
        ]
    );
    superuser_sql("doctor_risky", &(fixes.join("\n") + "\n"));
    let (code, report) = doctor_json(&path, &[]);
    assert_eq!((code, summary(&report)), (0, vec![]), "{report:#}");
}

#[test]
fn a_superuser_upstream_user_is_reported() {
    let pg = common::postgres();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, report) =
        doctor_json(&config(&dir, Postgres::APP_DB, (Postgres::SUPERUSER, pg.superuser_password()), ""), &[]);
    let want = expected(&[
        ("proxy_user_superuser", "error", "role postgres"),
        ("proxy_user_bypassrls", "error", "role postgres"),
    ]);
    assert_eq!((code, summary(&report)), (1, want), "{report:#}");
}

#[test]
fn doctor_schemas_limits_the_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, mistakes_db(), proxy_user(), "\n[doctor]\nschemas = [\"elsewhere\"]\n");
    let (code, report) = doctor_json(&path, &[]);
    // What other sessions a role sees does not depend on schemas.
    assert_eq!((code, summary(&report)), (1, expected(&SESSION_MISTAKES)), "{report:#}");
    // --database overrides upstream.database.
    let (code, report) = doctor_json(&config(&dir, "postgres", proxy_user(), ""), &["--database", "app"]);
    assert_eq!((code, report["database"].as_str()), (0, Some("app")));
}

#[test]
fn a_bad_password_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, Postgres::APP_DB, (Postgres::PROXY_USER, "wrong-password"), "");
    for format in ["text", "json"] {
        let (code, stdout, stderr) = doctor(&path, &["--format", format]);
        assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
        assert!(stderr.starts_with("rlsproxy doctor: cannot connect to 127.0.0.1:"), "{stderr}");
        assert!(stderr.contains("as app_proxy") && stderr.contains("28P01"), "{stderr}");
        assert!(!stderr.contains("wrong-password"), "{stderr}");
    }
}

#[test]
fn a_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, Postgres::APP_DB, proxy_user(), "\n[doctor]\ntenant_column = \"\"\n");
    let (code, _, stderr) = doctor(&path, &[]);
    assert_eq!(
        (code, stderr.trim()),
        (2, "rlsproxy doctor: doctor.tenant_column: must be a column name of 1 to 63 bytes")
    );
    let (code, _, stderr) = doctor(&dir.path().join("missing.toml"), &[]);
    assert_eq!(code, 2, "{stderr}");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("database = \"app\"\n", "allowed_databases = [\"app\"]\n");
    std::fs::write(&path, text.replace("tenant_column = \"\"", "")).unwrap();
    let (code, _, stderr) = doctor(&path, &[]);
    assert_eq!(
        (code, stderr.trim()),
        (2, "rlsproxy doctor: no database to audit: set upstream.database or pass --database")
    );
}

/// `rlsproxy run` audits at start-up and logs each finding as a warning, and starts anyway.
#[test]
fn run_logs_the_findings_as_warnings_and_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = mistakes_config(&dir);
    let text = std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    // proxy_owned is owned by app_proxy with RLS not forced: the start-up check refuses that
    // unless told otherwise (the doctor reports it either way). It also refuses an allowed
    // role with BYPASSRLS: tokens here may select doctor_stranger only.
    let text = text.replace("sslmode = \"disable\"\n", "sslmode = \"disable\"\nallow_unforced_owned_tables = true\n");
    let text = text.replace("[\"doctor_bypass\", \"doctor_stranger\"]", "[\"doctor_stranger\"]");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rlsproxy");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut logs = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            logs.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(logs.clone());
        }
    });
    let start = Instant::now();
    let mut logs = String::new();
    while !logs.contains("doctor: row-level-security findings") {
        assert!(start.elapsed() < Duration::from_secs(30), "no doctor summary in:\n{logs}");
        if let Ok(more) = rx.recv_timeout(Duration::from_millis(200)) {
            logs = more;
        }
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "the proxy listens despite the findings");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let _ = child.wait();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") && l.contains("doctor: ")).collect();
    assert_eq!(warnings.len(), 21, "20 findings and the summary:\n{logs}");
    assert!(
        warnings.iter().any(|l| l.contains("check=\"rls_disabled\"") || l.contains("check=rls_disabled")),
        "{logs}"
    );
}
