//! The `rlsproxy` binary: check-config, token, and run with a graceful SIGTERM.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is the report

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Postgres;
use rlsproxy::auth::Verifier;
use rlsproxy::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_rlsproxy");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A config file for the test cluster, listening on `port`, with `extra` appended.
fn write_config(dir: &tempfile::TempDir, port: u16, upstream_user: (&str, &str), extra: &str) -> std::path::PathBuf {
    let pg = common::postgres();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\nshutdown_grace_s = 10\n\n\
         [upstream]\nport = {}\ndatabase = \"app\"\nuser = \"{}\"\npassword = \"{}\"\nsslmode = \"disable\"\n\n\
         [jwt]\nsecret = \"{}\"\n{extra}",
        pg.port(),
        upstream_user.0,
        upstream_user.1,
        common::proxy::SECRET
    );
    let path = dir.path().join("rlsproxy.toml");
    std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())).expect("write config");
    path
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_remove("RUST_LOG").output().expect("run rlsproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_wrong_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write_config(&dir, 6432, (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD), "");
    let (code, stdout, _) = run(&["check-config", "--config", ok.to_str().expect("utf8")]);
    assert_eq!((code, stdout.trim().ends_with("configuration OK")), (0, true));

    let bad =
        write_config(&dir, 6432, ("u", "p"), "public_key_file = \"/nonexistent/key.pem\"\nalgorithms = [\"RS256\"]\n");
    let (code, _, stderr) = run(&["check-config", "--config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("rlsproxy: jwt.public_key_file: /nonexistent/key.pem:"), "{stderr}");

    let bad = write_config(&dir, 6432, ("u", "p"), "tenant_claim = \"\"\n");
    let (code, _, stderr) = run(&["check-config", "--config", bad.to_str().expect("utf8")]);
    assert_eq!((code, stderr.trim()), (1, "rlsproxy: jwt.tenant_claim: must not be empty"));
}

#[test]
fn token_mints_what_the_verifier_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, 6432, ("u", "p"), "role_claim = \"role\"\nallowed_roles = [\"admin_role\"]\n");
    let path_str = path.to_str().expect("utf8");
    let (code, token, stderr) = run(&[
        "token",
        "--config",
        path_str,
        "--tenant",
        "42",
        "--sub",
        "alice",
        "--role",
        "admin_role",
        "--ttl",
        "5m",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let config = Config::load(&path).expect("config");
    let ctx = Verifier::from_config(&config.jwt).expect("verifier").verify(token.trim()).expect("valid token");
    assert_eq!(
        (ctx.tenant.as_str(), ctx.subject.as_deref(), ctx.role.as_deref()),
        ("42", Some("alice"), Some("admin_role"))
    );
    let ttl = ctx.expires_at.expect("exp") as i64 - rlsproxy::auth::now_unix() as i64;
    assert!((295..=300).contains(&ttl), "ttl {ttl}");
}

fn spawn_proxy(config: &std::path::Path) -> Child {
    spawn_proxy_logging(config, "info")
}

fn spawn_proxy_logging(config: &std::path::Path, filter: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--config", config.to_str().expect("utf8")])
        .env("RUST_LOG", filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rlsproxy")
}

/// Reads `child`'s stderr on a thread until it closes: a test that reads it only at the end
/// would block the proxy as soon as the pipe's 64 KiB are full (trace-level logs fill it).
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut logs = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut logs).expect("read");
        logs
    })
}

fn wait_for_port(port: u16, child: &mut Child) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().expect("try_wait").is_none(), "rlsproxy exited early");
        assert!(start.elapsed() < Duration::from_secs(20), "rlsproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mint_for(path: &std::path::Path, tenant: &str, ttl: Duration) -> String {
    let config = Config::load(path).expect("config");
    let req = rlsproxy::auth::MintRequest { tenant: tenant.into(), subject: None, role: None, ttl, extra: vec![] };
    rlsproxy::auth::mint(&config.jwt, &req).expect("mint")
}

/// JSON logs: one object per line, the client span carries the tenant and backend pid,
/// and neither the token nor the upstream password ever appears, even at trace level
/// and when the token is rejected.
#[tokio::test]
async fn json_logs_carry_the_span_and_never_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let path = write_config(
        &dir,
        port,
        (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD),
        "leeway_s = 0\n\n[log]\nformat = \"json\"\n",
    );
    let mut child = spawn_proxy_logging(&path, "trace");
    let logs = drain_stderr(&mut child);
    wait_for_port(port, &mut child);
    let token = mint_for(&path, "2", Duration::from_secs(600));
    let expired = mint_for(&path, "2", Duration::ZERO);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user("alice").dbname("app").password(&token);
    let client = common::connect(&cfg).await;
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("query");
    assert_eq!(rows.len(), 2);
    drop(client);
    cfg.password(&expired);
    assert!(cfg.connect(tokio_postgres::NoTls).await.is_err(), "expired token refused");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert_eq!(wait_for_exit(&mut child, Duration::from_secs(10)), Some(0));
    let logs = logs.join().expect("the stderr reader");
    let mut saw_session = false;
    for line in logs.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["message"] == "session started" {
            assert_eq!(value["span"]["tenant"], "2", "{line}");
            assert!(value["span"]["backend_pid"].as_i64().is_some_and(|pid| pid > 0), "{line}");
            saw_session = true;
        }
    }
    assert!(saw_session, "no session line in {logs}");
    for secret in [token.as_str(), expired.as_str(), Postgres::PROXY_PASSWORD, common::proxy::SECRET] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature), "a token signature appears in the logs");
}

#[tokio::test]
async fn sigterm_lets_the_open_transaction_finish_then_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let path = write_config(&dir, port, (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD), "leeway_s = 0\n");
    let mut child = spawn_proxy(&path);
    wait_for_port(port, &mut child);
    let token = mint_for(&path, "1", Duration::from_secs(600));
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user("alice").dbname("app").password(&token);
    let client = common::connect(&cfg).await;
    client.batch_execute("BEGIN").await.expect("begin");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    // New clients are refused once the listener is closed.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "listener still open after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open transaction still works and commits.
    let rows = client.query("SELECT count(*) FROM documents", &[]).await.expect("query in open transaction");
    assert_eq!(rows[0].get::<_, i64>(0), 3);
    client.batch_execute("COMMIT").await.expect("commit");
    // Then the session is closed and the process exits cleanly.
    let after = client.simple_query("SELECT 1").await;
    assert!(after.is_err(), "session still open after the drain");
    assert_eq!(wait_for_exit(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn run_refuses_an_upstream_role_that_inherits_an_allowed_role() {
    assert_inheriting_role_refused("role_claim = \"role\"\nallowed_roles = [\"admin_role\"]\n");
}

/// Without any role claim, inheriting a role that policies name still leaks every tenant's rows.
#[test]
fn run_refuses_an_upstream_role_that_inherits_a_policy_role() {
    assert_inheriting_role_refused("");
}

fn assert_inheriting_role_refused(jwt_extra: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, free_port(), (Postgres::INHERIT_USER, Postgres::INHERIT_PASSWORD), jwt_extra);
    let mut child = spawn_proxy(&path);
    assert_eq!(wait_for_exit(&mut child, Duration::from_secs(20)), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(stderr.contains("unsafe upstream role: upstream.user inherits the privileges of admin_role"), "{stderr}");
}

/// A configuration the TOML parser rejects is reported with its line, never the line's text:
/// a `secret = "…` missing its closing quote would print the secret.
#[test]
fn a_syntax_error_in_the_configuration_never_prints_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rlsproxy.toml");
    std::fs::write(
        &path,
        "[listen]\naddress = \"127.0.0.1:6432\"\n\n[jwt]\nsecret = \"hunter2-hunter2-hunter2-hunter2-x\n",
    )
    .expect("write config");
    let (code, stdout, stderr) = run(&["check-config", "--config", path.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stdout}{stderr}");
    assert!(stderr.starts_with("rlsproxy: ") && stderr.contains("line 5"), "{stderr}");
}

/// Environment overrides keep a string's exact text (a numeric-looking secret is not read as
/// a number), numbers are still read where the key is one, and every list key takes a
/// comma-separated list.
#[test]
fn environment_overrides_keep_strings_and_take_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, 6432, ("u", "p"), "");
    let path_str = path.to_str().expect("utf8");
    let secret = "0000000000000000000000000000000000000042";
    let out = Command::new(BIN)
        .args(["token", "--config", path_str, "--tenant", "7", "--ttl", "5m"])
        .env("RLSPROXY__JWT__SECRET", secret)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rlsproxy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let text = std::fs::read_to_string(&path).expect("config").replace(common::proxy::SECRET, secret);
    let config = Config::from_toml(&text).expect("config");
    let ctx = Verifier::from_config(&config.jwt).expect("verifier").verify(&token).expect("signed with the exact text");
    assert_eq!(ctx.tenant, "7");

    let out = Command::new(BIN)
        .args(["check-config", "--config", path_str])
        .env("RLSPROXY__GUARD__OPERATOR_ROLES", "migrator,admin")
        .env("RLSPROXY__GUARD__OPERATOR_ALLOWS", "do,explain")
        .env("RLSPROXY__LISTEN__SHUTDOWN_GRACE_S", "3")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rlsproxy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Sizes are accepted as docs/configuration.md writes their defaults (`"64 MiB"`), from the file and
/// from the environment; a unit the loader does not know is refused with the key's name.
#[test]
fn sizes_take_the_units_the_readme_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, 6432, ("u", "p"), "[limits]\nmax_message_bytes = \"64 MiB\"\n");
    let text = std::fs::read_to_string(&path).expect("config");
    let config = Config::from_toml(&text).expect("64 MiB");
    assert_eq!(config.limits.max_message_bytes, 64 << 20);
    let config = Config::from_toml(&text.replace("\"64 MiB\"", "65536")).expect("a plain number");
    assert_eq!(config.limits.max_message_bytes, 65536);

    let path_str = path.to_str().expect("utf8");
    let check = |name: &str, value: &str| {
        Command::new(BIN)
            .args(["check-config", "--config", path_str])
            .env(name, value)
            .env_remove("RUST_LOG")
            .output()
            .expect("run rlsproxy")
    };
    let out = check("RLSPROXY__GUARD__MAX_STATEMENT_BYTES", "512 KiB");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = check("RLSPROXY__LIMITS__MAX_MESSAGE_BYTES", "10 MB");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown unit \"MB\" in \"10 MB\": use B, KiB, MiB or GiB"), "{stderr}");
    assert!(stderr.contains("max_message_bytes"), "{stderr}");
}

/// A proxy process that is stopped when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `RUST_LOG` goes through the configuration's filter parser: white space before a multi-byte
/// target made tracing-subscriber panic at start (exit 101 before the fix); an invalid one is
/// reported in the log instead of silently ignored, and `[log] filter` applies.
#[test]
fn rust_log_is_parsed_like_the_configured_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr_of = |filter: &str| {
        let port = free_port();
        let path = write_config(&dir, port, (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD), "");
        let mut child = Running(spawn_proxy_logging(&path, filter));
        let logs = drain_stderr(&mut child.0);
        wait_for_port(port, &mut child.0);
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
        assert_eq!(wait_for_exit(&mut child.0, Duration::from_secs(10)), Some(0), "RUST_LOG={filter}");
        logs.join().expect("the stderr reader")
    };
    let logs = stderr_of("warn, é=debug");
    assert!(!logs.contains("listening"), "warn level: {logs}");
    let logs = stderr_of("rlsproxy=loud");
    assert!(
        logs.contains("RUST_LOG is not a valid filter and is ignored; [log] filter applies")
            && logs.contains("error=`rlsproxy=loud`: "),
        "{logs}"
    );
    assert!(logs.contains("listening"), "[log] filter = info: {logs}");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).expect("value").parse().expect("KiB")
}

/// A client that asks for a 2 GB result and reads none of it: back-pressure holds the server
/// connection (the server waits in ClientWrite), the proxy's memory stays bounded, and the
/// server connection is freed when the client goes.
#[tokio::test]
async fn a_client_that_never_reads_holds_its_server_connection_not_the_proxys_memory() {
    const QUERY: &str = "SELECT repeat('x', 1000) FROM generate_series(1, 2000000)";
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let path = write_config(&dir, port, (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD), "leeway_s = 0\n");
    let mut child = Running(spawn_proxy_logging(&path, "warn"));
    wait_for_port(port, &mut child.0);
    let token = mint_for(&path, "1", Duration::from_secs(600));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut reader, _) = common::raw::login(addr, &token, &[]).await;
    let before = rss_kib(child.0.id());

    reader.send_query(QUERY).await;
    let admin = common::postgres().superuser_client("app").await;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND wait_event = 'ClientWrite'";
    let start = Instant::now();
    while admin.query_one(waiting, &[&QUERY]).await.expect("activity").get::<_, i64>(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the server never waited for the proxy to read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some more time for anything that would grow.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_kib(child.0.id());
    eprintln!("proxy RSS: {before} KiB before, {during} KiB while the server waits for a client that reads nothing");
    assert!(during < before + 16 * 1024, "the proxy grew by {} KiB", during - before);

    drop(reader);
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'";
    let start = Instant::now();
    while admin.query_one(running, &[&QUERY]).await.expect("activity").get::<_, i64>(0) > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the query still runs after its client went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the server stopped {:?} after the client went", start.elapsed());
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// 10,000 logins with a forged token (signed with another secret), 50 at a time: each is
/// refused (28P01), the `auth_failures` metric counts every one, a valid client's statements
/// all succeed meanwhile, and the proxy's CPU per refusal is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_forged_tokens_is_refused_counted_and_leaves_valid_clients_alone() {
    const ATTEMPTS: usize = 10_000;
    const AT_ONCE: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let admin = format!("leeway_s = 0\n\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n");
    let path = write_config(&dir, port, (Postgres::PROXY_USER, Postgres::PROXY_PASSWORD), &admin);
    let mut child = Running(spawn_proxy_logging(&path, "error"));
    wait_for_port(port, &mut child.0);
    let mut forger = Config::load(&path).expect("config").jwt;
    forger.secret = Some("another-secret-that-the-proxy-does-not-know".into());
    let forged = rlsproxy::auth::mint(
        &forger,
        &rlsproxy::auth::MintRequest {
            tenant: "2".into(),
            subject: None,
            role: None,
            ttl: Duration::from_secs(600),
            extra: vec![],
        },
    )
    .expect("mint");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user("alice").dbname("app").password(mint_for(
        &path,
        "1",
        Duration::from_secs(600),
    ));
    let valid = common::connect(&cfg).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = valid.query_one("SELECT count(*) FROM documents", &[]).await.expect("valid client").get(0);
                assert_eq!(n, 3);
                served += 1;
            }
            served
        })
    };

    let cpu_before = cpu_time(child.0.id());
    let started = Instant::now();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let (attempts, forged) = (attempts.clone(), forged.clone());
            tokio::spawn(async move {
                let mut refusals = Vec::new();
                while attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < ATTEMPTS {
                    let mut c = common::raw::connect(addr).await;
                    c.send_startup(&[("user", "mallory"), ("database", "app")]).await;
                    assert_eq!(c.read_message().await.0, b'R');
                    c.send_password(&forged).await;
                    let (tag, body) = c.read_message().await;
                    assert_eq!(tag, b'E');
                    refusals.push(common::raw::error_fields(&body)[&'C'].clone());
                }
                refusals
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for worker in workers {
        for code in worker.await.expect("worker") {
            *codes.entry(code).or_insert(0usize) += 1;
        }
    }
    let took = started.elapsed();
    let cpu = cpu_time(child.0.id()) - cpu_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = steady.await.expect("valid client");
    eprintln!(
        "{ATTEMPTS} forged logins in {took:?}: proxy CPU {cpu:?}, {:.0} µs per refusal; {served} statements of a valid \
         client served meanwhile",
        cpu.as_micros() as f64 / ATTEMPTS as f64
    );
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), [("28P01".to_string(), ATTEMPTS)]);
    assert!(served > 0);

    let (status, metrics) =
        common::http::get(std::net::SocketAddr::from(([127, 0, 0, 1], admin_port)), "/metrics", None).await;
    assert_eq!(status, 200);
    let line = format!("rlsproxy_auth_failures_total{{reason=\"signature\"}} {ATTEMPTS}");
    assert!(metrics.lines().any(|l| l == line), "no `{line}` in the metrics:\n{metrics}");
}
