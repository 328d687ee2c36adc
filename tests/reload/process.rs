//! The real `rlsproxy run` as a subprocess, in front of the test cluster: its configuration
//! file (rewritten by the tests), its log (stderr, to a file the tests read while it runs),
//! SIGHUP, clients, and the admin listener.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_rlsproxy");
/// Bearer token of `/admin/*` in every configuration rendered here.
pub const ADMIN_TOKEN: &str = "reload-admin-token-0123456789abcdef";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running proxy process; killed when dropped.
pub struct ProxyProcess {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub port: u16,
    pub admin: SocketAddr,
    log_path: PathBuf,
    child: Child,
}

impl ProxyProcess {
    /// A temporary directory for the configuration and key files, and two free ports.
    pub fn prepare() -> (tempfile::TempDir, u16, u16) {
        (tempfile::tempdir().expect("tempdir"), free_port(), free_port())
    }

    /// The configuration for the test cluster on `port`/`admin_port`: `[listen]`, `[upstream]`,
    /// `[admin]` with [`ADMIN_TOKEN`], a pool of 4, then `rest` (the `[jwt]` section and more).
    pub fn render(port: u16, admin_port: u16, rest: &str) -> String {
        format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\nshutdown_grace_s = 2\n\n{}\n\
             [admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [pool]\nsize = 4\nacquire_timeout_ms = 2000\n\n{rest}",
            common::postgres().upstream_toml("disable")
        )
    }

    /// Writes `config` into `dir` and starts the proxy (`RUST_LOG` unset: `[log] filter` rules).
    pub fn start(dir: tempfile::TempDir, port: u16, admin_port: u16, config: &str) -> Self {
        let config_path = dir.path().join("rlsproxy.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let log_path = dir.path().join("rlsproxy.log");
        let log = std::fs::File::create(&log_path).expect("create the log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rlsproxy");
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let mut proxy = Self { dir, config_path, port, admin, log_path, child };
        proxy.wait_until_listening();
        proxy
    }

    fn wait_until_listening(&mut self) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.child.try_wait().expect("try_wait");
            assert!(exited.is_none(), "rlsproxy exited early: {exited:?}\n{}", self.logs());
            assert!(start.elapsed() < Duration::from_secs(20), "rlsproxy did not listen\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the configuration file (atomically).
    pub fn rewrite_config(&self, config: &str) {
        crate::keys::replace_file(&self.config_path, config);
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        let sent = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success());
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.logs().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    /// Waits until `count` lines contain `needle`; returns the last of them.
    pub async fn wait_for_lines(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let lines = self.lines_with(needle);
            if lines.len() >= count {
                return lines[count - 1].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{count} lines with {needle:?} expected, {} seen:\n{}",
                lines.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A tokio-postgres configuration for a client with `token`.
    pub fn client_config(&self, token: &str) -> tokio_postgres::Config {
        common::proxy::client_config(SocketAddr::from(([127, 0, 0, 1], self.port)), token)
    }

    /// A connected client.
    pub async fn connect(&self, token: &str) -> tokio_postgres::Client {
        common::connect(&self.client_config(token)).await
    }

    /// The (SQLSTATE, message) a client with `token` is refused with.
    pub async fn refusal(&self, token: &str) -> (String, String) {
        match self.client_config(token).connect(tokio_postgres::NoTls).await {
            Ok(_) => panic!("the token was accepted"),
            Err(e) => common::proxy::db_error(&e),
        }
    }

    /// `GET path` on the admin listener: (status, body).
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        common::http::get(self.admin, path, bearer).await
    }

    /// The value of the metric sample `name` (labels included, as exposed).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, text) = self.get("/metrics", None).await;
        assert_eq!(status, 200);
        common::http::sample(&text, name)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rlsproxy check-config` on a file with `config`: (exit code, stderr).
pub fn check_config(dir: &Path, config: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, config).expect("write the config");
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().expect("run check-config");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}
