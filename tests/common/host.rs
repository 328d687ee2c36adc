//! What the host gives the harness: PostgreSQL binaries, the `postgres` OS
//! user, processes that outlive the tests, TLS files from the openssl CLI.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// libpq environment variables that could point our tools elsewhere.
pub(in crate::common) const PG_ENV_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGREQUIRESSL",
    "PGTARGETSESSIONATTRS",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
];

/// A shell that outlives this process by at most a second: once this process is
/// gone (exit, panic, abort, SIGKILL) it stops the server by the PID in its
/// postmaster.pid (SIGINT: fast shutdown) and removes the temp dir. Own process
/// group, so a Ctrl-C in the terminal does not kill it before it cleans up.
#[allow(clippy::zombie_processes)] // Never waited for: it must outlive this process.
pub(super) fn spawn_watchdog(root: &Path) {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        pidfile="$2/data/postmaster.pid"
        if [ -f "$pidfile" ]; then
            pid=$(head -n 1 "$pidfile")
            kill -INT "$pid" 2>/dev/null
            i=0
            while [ -f "$pidfile" ] && kill -0 "$pid" 2>/dev/null && [ "$i" -lt 300 ]; do
                sleep 0.1; i=$((i + 1))
            done
        fi
        rm -rf "$2"
    "#;
    Command::new("sh")
        .args(["-c", SCRIPT, "rlsproxy-test-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the cluster watchdog");
}

/// CA and server certificate with the openssl CLI (P-256 keys, 10 years).
pub(super) fn make_tls_files(root: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(root)
            .output()
            .expect("run openssl (is the openssl CLI installed?)");
        check(&out, &format!("openssl {}", args.join(" ")));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    #[rustfmt::skip]
    openssl(&[&["req", "-x509"][..], &ec, &[
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=rlsproxy test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]].concat());
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
    fs::write(
        root.join("server.ext"),
        "basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    #[rustfmt::skip]
    openssl(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "3650", "-sha256", "-extfile", "server.ext",
    ]);
    // The server refuses a key readable by others.
    fs::set_permissions(root.join("server.key"), fs::Permissions::from_mode(0o600)).expect("chmod server.key");
}

/// A command for a server binary; as user `postgres` when we are root (the
/// server refuses to run as root), else as ourselves.
pub(super) fn server_command(bindir: &Path, name: &str, cwd: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bindir.join(name));
    cmd.current_dir(cwd);
    for var in PG_ENV_VARS {
        cmd.env_remove(var);
    }
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    // Own process group: a terminal Ctrl-C must not stop the server behind the
    // tests' back; the watchdog stops it.
    cmd.process_group(0);
    cmd
}

/// `Some((uid, gid))` of user `postgres` when running as root.
pub(super) fn server_owner() -> Option<(u32, u32)> {
    // /proc/self is owned by the effective uid: no libc call needed.
    let euid = fs::metadata("/proc/self").expect("stat /proc/self").uid();
    if euid != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs an OS user `postgres` (PostgreSQL refuses root)");
    let fields: Vec<&str> = line.split(':').collect();
    let uid = fields[2].parse().expect("uid of postgres");
    let gid = fields[3].parse().expect("gid of postgres");
    Some((uid, gid))
}

/// `$RLSPROXY_TEST_PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian), else the directory of `initdb` on `PATH`.
pub(super) fn find_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RLSPROXY_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|d| d.join("initdb").exists()))
        .expect("no PostgreSQL server binaries: install postgresql or set RLSPROXY_TEST_PG_BINDIR")
}

/// A port that was free on 127.0.0.1 a moment ago (callers retry when it was taken meanwhile).
pub(super) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
