//! Server connections coming and going: an upstream that dies or is unreachable,
//! and statements that need the injection in a transaction of their own.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is the report

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::proxy::{self, db_error};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP forwarder between the proxy and PostgreSQL that a test can cut.
struct Forwarder {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let addr = listener.local_addr().expect("addr");
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().expect("lock").push(conn);
            }
        });
        tasks.lock().expect("lock").push(accept);
        Self { addr, tasks }
    }

    /// Closes the listener and every relayed connection, like a server that went away.
    fn cut(&self) {
        for task in self.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

/// Connects and keeps the connection task's own result: an error the server sends to an
/// idle client (FATAL on termination) ends that task rather than a later query.
async fn connect_watched(
    proxy: &proxy::TestProxy,
    token: &str,
) -> (tokio_postgres::Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, conn) = proxy.client_config(token).connect(tokio_postgres::NoTls).await.expect("connect");
    (client, tokio::spawn(conn))
}

async fn connection_error(task: JoinHandle<Result<(), tokio_postgres::Error>>) -> (String, String) {
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("connection ends");
    db_error(&result.expect("task").expect_err("connection ends with an error"))
}

fn config_via(addr: SocketAddr) -> rlsproxy::config::Config {
    let mut config = proxy::base_config(common::postgres());
    config.upstream.port = addr.port();
    config.upstream.connect_timeout_ms = 1000;
    config
}

#[tokio::test]
async fn upstream_loss_gives_08006_and_later_clients_reconnect() {
    let forwarder = Forwarder::start(common::postgres().addr()).await;
    let proxy = proxy::start(config_via(forwarder.addr)).await;
    let (client, conn) = connect_watched(&proxy, &proxy.token("1")).await;
    // simple_query completes at ReadyForQuery: nothing is in flight when the server goes.
    let rows = client.simple_query("SELECT count(*) FROM documents").await.expect("query");
    assert!(matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("3")));

    forwarder.cut();
    let (code, message) = connection_error(conn).await;
    assert_eq!(code, "08006", "{message}");
    assert!(message.starts_with("rlsproxy: "), "{message}");

    // While the server is unreachable, logins fail with 08006 and the proxy stays up.
    let err = proxy.try_connect(&proxy.token("2")).await.expect_err("no upstream");
    let (code, message) = db_error(&err);
    assert_eq!(code, "08006");
    assert!(message.contains("the upstream server is unavailable"), "{message}");

    // A new server path: the same proxy serves new clients again.
    let forwarder2 = Forwarder::start(common::postgres().addr()).await;
    let proxy2 = proxy::start(config_via(forwarder2.addr)).await;
    let client = proxy2.connect(&proxy2.token("2")).await;
    assert_eq!(client.query_one("SELECT count(*) FROM documents", &[]).await.expect("query").get::<_, i64>(0), 2);
    assert_eq!(proxy.pool.stats(), (0, 0), "the dead connection must not stay in the pool");
}

#[tokio::test]
async fn a_terminated_backend_reaches_the_client_and_the_pool_recovers() {
    let mut config = proxy::base_config(common::postgres());
    config.pool.size = 1;
    let proxy = proxy::start(config).await;
    let (client, conn) = connect_watched(&proxy, &proxy.token("1")).await;
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    let admin = common::postgres().superuser_client("app").await;
    admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate");
    let (code, message) = connection_error(conn).await;
    assert_eq!((code.as_str(), message.as_str()), ("57P01", "terminating connection due to administrator command"));
    drop(client);

    // The only pool slot is free again, with a fresh connection behind it.
    let client = proxy.connect(&proxy.token("2")).await;
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("query");
    let titles: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(titles, ["globex merger plan", "globex handbook"]);
}

/// VACUUM and friends refuse to share a pipeline with the injection; through the
/// extended protocol the batch that runs them starts with a Bind of a prepared statement.
#[tokio::test]
async fn statements_that_refuse_a_transaction_block_run_through_every_protocol_path() {
    let proxy = proxy::start_default().await;
    let mut client = proxy.connect(&proxy.token("1")).await;
    client.batch_execute("VACUUM documents").await.expect("simple VACUUM");
    client.execute("VACUUM documents", &[]).await.expect("extended VACUUM (unnamed)");
    let stmt = client.prepare("VACUUM documents").await.expect("prepare");
    client.execute(&stmt, &[]).await.expect("named VACUUM, first run");
    client.execute(&stmt, &[]).await.expect("named VACUUM, second run");
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.expect("begin RR");
    let level: String = client.query_one("SHOW transaction_isolation", &[]).await.expect("show").get(0);
    assert_eq!(level, "repeatable read");
    client.batch_execute("COMMIT").await.expect("commit");
    let t = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::Serializable)
        .start()
        .await
        .expect("serializable transaction");
    assert_eq!(t.query_one("SELECT count(*) FROM documents", &[]).await.expect("count").get::<_, i64>(0), 3);
    t.commit().await.expect("commit");
    // Every statement still ran as tenant 1.
    let tenant: String =
        client.query_one("SELECT current_setting('app.current_tenant')", &[]).await.expect("setting").get(0);
    assert_eq!(tenant, "1");
}

/// A client that writes a long pipeline (tens of MB each way) while reading the replies
/// concurrently gets every reply, filtered, in order: the proxy keeps draining the server
/// while it is still forwarding the client's messages.
#[tokio::test]
async fn a_long_pipeline_read_concurrently_does_not_deadlock() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const QUERIES: usize = 20_000;
    let proxy = proxy::start_default().await;
    let mut raw = common::raw::connect(proxy.addr).await;
    raw.send_startup(&[("user", "alice"), ("database", "app")]).await;
    assert_eq!(raw.read_message().await.0, b'R');
    raw.send_password(&proxy.token("2")).await;
    raw.read_until_ready().await;
    let (mut rd, mut wr) = raw.into_inner().into_split();

    // Long statements (a comment pads each to ~1 KB) make the client's side as heavy as the replies.
    let sql = format!("SELECT repeat('x', 1000) FROM tenants /* {} */", "p".repeat(1000));
    let batch = common::wire::Msgs::new().query(&sql).bytes().repeat(QUERIES);
    let writer = tokio::spawn(async move { wr.write_all(&batch).await.map(|()| wr) });
    let reader = async {
        let (mut ready, mut rows) = (0, 0);
        let mut header = [0u8; 5];
        while ready < QUERIES {
            rd.read_exact(&mut header).await.expect("read header");
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize - 4;
            let mut body = vec![0u8; len];
            rd.read_exact(&mut body).await.expect("read body");
            match header[0] {
                b'Z' => ready += 1,
                b'D' => rows += 1,
                b'E' => panic!("error: {:?}", common::raw::error_fields(&body)),
                _ => {}
            }
        }
        rows
    };
    let rows = tokio::time::timeout(std::time::Duration::from_secs(120), reader).await.expect("pipeline completes");
    // Tenant 2 sees exactly its own row of `tenants` in every one of the queries.
    assert_eq!(rows, QUERIES);
    writer.await.expect("writer task").expect("write pipeline");
}

/// `upstream.password_file` is read again for every new server connection: after the role's
/// password is rotated (and the file rewritten) new clients are served without a restart, and
/// a file that cannot be read meanwhile keeps the password read before.
#[tokio::test]
async fn a_rotated_upstream_password_serves_new_connections() {
    let admin = common::postgres().superuser_client("app").await;
    // A role of its own: the other tests keep app_proxy's password.
    admin.batch_execute("CREATE ROLE rotating_proxy LOGIN NOINHERIT PASSWORD 'first-password'").await.expect("role");
    let file = std::env::temp_dir().join(format!("rlsproxy-rotating-password-{}", std::process::id()));
    std::fs::write(&file, "first-password\n").expect("write");
    let mut config = proxy::base_config(common::postgres());
    config.upstream.user = "rotating_proxy".into();
    config.upstream.password = None;
    config.upstream.password_file = Some(file.clone());
    let proxy = proxy::start(config).await;
    let who = |c: tokio_postgres::Client| async move {
        c.query_one("SELECT current_user::text", &[]).await.expect("query").get::<_, String>(0)
    };
    let first = proxy.connect(&proxy.token("1")).await;

    admin.batch_execute("ALTER ROLE rotating_proxy PASSWORD 'second-password'").await.expect("rotate");
    std::fs::write(&file, "second-password\n").expect("rewrite");
    // Session pooling: each client below opens a server connection of its own.
    assert_eq!(who(proxy.connect(&proxy.token("1")).await).await, "rotating_proxy");
    std::fs::remove_file(&file).expect("remove");
    assert_eq!(who(proxy.connect(&proxy.token("2")).await).await, "rotating_proxy", "the password read before");
    assert_eq!(who(first).await, "rotating_proxy");
}

/// `upstream.sslrootcert` is read again when it changes: a proxy that trusts another CA fails
/// to open server connections (verify-full), and once the file holds the server's CA, new
/// connections succeed without a restart; a file that then cannot be read keeps the CA
/// read before.
#[tokio::test]
async fn a_rotated_upstream_ca_serves_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other_ca = dir.path().join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "other-ca.key", "-out", "other-ca.crt", "-days", "1", "-subj", "/CN=another CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .current_dir(dir.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let roots = dir.path().join("roots.crt");
    std::fs::copy(&other_ca, &roots).expect("copy");
    let mut config = proxy::base_config(common::postgres());
    config.upstream.sslmode = rlsproxy::config::SslMode::VerifyFull;
    config.upstream.sslrootcert = Some(roots.clone());
    config.upstream.host = "localhost".into();
    let proxy = proxy::start(config).await;
    let refused = proxy.try_connect(&proxy.token("1")).await.expect_err("a server certificate of another CA");
    assert_eq!(proxy::db_error(&refused).0, "08006", "{refused:?}");

    // A later modification time than the first file's, whatever the file system's resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::copy(common::postgres().ca_cert_path(), &roots).expect("rotate the CA");
    let client = proxy.connect(&proxy.token("1")).await;
    let who: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "app_proxy", "verified against the rotated CA");
    std::fs::remove_file(&roots).expect("remove");
    let again = proxy.connect(&proxy.token("2")).await;
    let who: String = again.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "app_proxy", "the CA read before");
}
