//! Starting the throwaway cluster: initdb, configuration, start, migrations
//! and test roles. Blocking std code only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Postgres;
use super::host::{
    check, find_bindir, free_port, make_tls_files, random_hex, server_command, server_owner, spawn_watchdog,
};

/// Attempts at finding a free port: another process may take the one we probed.
const PORT_ATTEMPTS: usize = 5;

/// Creates, starts and loads the cluster (see [`super::postgres`]).
pub(super) fn start() -> Postgres {
    let bindir = find_bindir();
    let owner = server_owner();
    let root =
        tempfile::Builder::new().prefix("rlsproxy-test-pg-").tempdir().expect("create the cluster's temp dir").keep();
    // Armed first, so that whatever fails below, the directory (and a server
    // that did start) goes away when this process exits.
    spawn_watchdog(&root);
    let superuser_password = random_hex(16);

    let pwfile = root.join("superuser.pw");
    fs::write(&pwfile, &superuser_password).expect("write the superuser password file");
    make_tls_files(&root);
    if let Some((uid, gid)) = owner {
        for path in [&root, &pwfile, &root.join("server.crt"), &root.join("server.key")] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }

    let data = root.join("data");
    let out = server_command(&bindir, "initdb", &root, owner)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=trust"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["-E", "UTF8", "--locale=C", "--no-sync"])
        .output()
        .expect("run initdb");
    check(&out, "initdb");
    fs::remove_file(&pwfile).expect("remove the password file");
    fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         host all md5_user 127.0.0.1/32 md5\n\
         host all trust_user 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("write pg_hba.conf");

    let port = start_server(&bindir, &root, owner);
    let pg = Postgres { root, bindir, port, superuser_password };
    load(&pg);
    pg
}

/// Picks a port, starts `postgres`, waits until it accepts connections;
/// retries with another port when the chosen one was taken meanwhile.
fn start_server(bindir: &Path, root: &Path, owner: Option<(u32, u32)>) -> u16 {
    let data = root.join("data");
    let log = root.join("postgres.log");
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        // postgresql.auto.conf is read last, so these override initdb's defaults.
        let conf = format!(
            "port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{root}'\n\
             ssl = on\n\
             ssl_cert_file = '{root}/server.crt'\n\
             ssl_key_file = '{root}/server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             max_connections = 200\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            root = root.display()
        );
        fs::write(data.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
        let log_file = fs::File::create(&log).expect("create postgres.log");
        let mut child = server_command(bindir, "postgres", root, owner)
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawn postgres");
        if wait_ready(bindir, root, port, &mut child) {
            return port;
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        if !text.contains("could not bind") && !text.contains("could not create any TCP/IP") {
            panic!("postgres exited during startup:\n{text}");
        }
    }
    panic!("no free port for postgres after {PORT_ATTEMPTS} attempts");
}

/// True once the server accepts connections; false if it exited first.
fn wait_ready(bindir: &Path, root: &Path, port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().expect("poll postgres").is_some() {
            return false;
        }
        let ready = Command::new(bindir.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(root)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .status()
            .expect("run pg_isready");
        if ready.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("postgres not ready after 60 s; see {}", root.join("postgres.log").display());
}

/// Creates the databases, applies `migrations/*.sql` in name order, then the
/// test roles that the migrations do not know about.
fn load(pg: &Postgres) {
    run_psql(pg, "postgres", None, Some("CREATE DATABASE app;"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read migrations/")
        .map(|e| e.expect("migrations/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no migrations in {}", dir.display());
    for file in &files {
        run_psql(pg, "app", Some(file), None);
    }
    let roles = format!(
        "ALTER ROLE app_proxy PASSWORD '{proxy}';
         SET password_encryption = 'md5';
         CREATE ROLE md5_user LOGIN NOINHERIT PASSWORD '{md5}';
         RESET password_encryption;
         CREATE ROLE trust_user LOGIN NOINHERIT;
         CREATE ROLE inherit_user LOGIN INHERIT PASSWORD '{inherit}';
         GRANT admin_role TO md5_user, trust_user, inherit_user;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
             TO md5_user, trust_user, inherit_user;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO md5_user, trust_user, inherit_user;
         CREATE DATABASE bench OWNER app_proxy;
         \\connect bench
         -- PG15's public schema belongs to pg_database_owner, whose rights a
         -- NOINHERIT owner does not use: give the schema to app_proxy itself.
         ALTER SCHEMA public OWNER TO app_proxy;",
        proxy = Postgres::PROXY_PASSWORD,
        md5 = Postgres::MD5_PASSWORD,
        inherit = Postgres::INHERIT_PASSWORD,
    );
    run_psql(pg, "app", None, Some(&roles));
}

/// Runs a file or SQL text (sent on stdin, so psql runs it statement by statement).
fn run_psql(pg: &Postgres, db: &str, file: Option<&Path>, sql: Option<&str>) {
    let mut cmd = pg.superuser_psql(db);
    if let Some(file) = file {
        cmd.arg("-f").arg(file);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn psql");
    let stdin = child.stdin.take().expect("psql stdin");
    if let Some(sql) = sql {
        std::io::Write::write_all(&mut { stdin }, sql.as_bytes()).expect("write SQL to psql");
    } else {
        drop(stdin);
    }
    let out = child.wait_with_output().expect("wait for psql");
    check(&out, &format!("psql {}", file.map_or("<setup SQL>".into(), |f| f.display().to_string())));
}
