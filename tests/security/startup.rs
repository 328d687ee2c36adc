//! The startup packet: only allow-listed settings pass, newer protocol minors are
//! negotiated down, GSSENC is declined, and malformed first bytes are harmless.

use crate::common::proxy;
use crate::common::raw::{self, RawClient};
use crate::{ACME, assert_closed, assert_serves, first_column, raw_login, raw_query, server_error, sev_code_msg, tags};

/// A raw client whose StartupMessage (3.0, user alice, database app, plus `extra`) is refused
/// before any password is asked: returns the error fields.
async fn refused_startup(
    addr: std::net::SocketAddr,
    extra: &[(&str, &str)],
) -> std::collections::HashMap<char, String> {
    let mut c = raw::connect(addr).await;
    let mut params = vec![("user", "alice"), ("database", "app")];
    params.extend_from_slice(extra);
    c.send_startup(&params).await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag as char, 'E', "expected an ErrorResponse before any authentication request");
    assert_closed(&mut c).await;
    raw::error_fields(&body)
}

#[tokio::test]
async fn startup_parameters_outside_the_allow_list_are_refused() {
    let proxy = proxy::start_default().await;
    let token = proxy.token("1");

    // tokio-postgres sends `options` as a startup parameter.
    let mut cfg = proxy.client_config(&token);
    cfg.options("-c app.current_tenant=2");
    let err = cfg.connect(tokio_postgres::NoTls).await.err().expect("options accepted");
    assert_eq!(
        server_error(&err),
        (
            "FATAL".into(),
            "42501".into(),
            "rlsproxy does not accept the setting \"app.current_tenant\" in the \"options\" startup parameter".into()
        )
    );

    let refused_option =
        |name: &str| format!("rlsproxy does not accept the setting \"{name}\" in the \"options\" startup parameter");
    let f = refused_startup(proxy.addr, &[("options", "-c application_name=x -c search_path=evil")]).await;
    assert_eq!(sev_code_msg(&f), ("FATAL", "42501", refused_option("search_path").as_str()));
    let f = refused_startup(proxy.addr, &[("options", "--role=admin_role")]).await;
    assert_eq!(sev_code_msg(&f), ("FATAL", "42501", refused_option("role").as_str()));
    let f = refused_startup(proxy.addr, &[("search_path", "evil, public")]).await;
    assert_eq!(sev_code_msg(&f), ("FATAL", "42501", "rlsproxy does not accept the startup parameter \"search_path\""));
    let f = refused_startup(proxy.addr, &[("app.current_tenant", "2")]).await;
    assert_eq!(
        sev_code_msg(&f),
        ("FATAL", "42501", "rlsproxy does not accept the startup parameter \"app.current_tenant\"")
    );
    let f = refused_startup(proxy.addr, &[("role", "admin_role")]).await;
    assert_eq!(sev_code_msg(&f), ("FATAL", "42501", "rlsproxy does not accept the startup parameter \"role\""));
    let f = refused_startup(proxy.addr, &[("replication", "database")]).await;
    assert_eq!(sev_code_msg(&f), ("FATAL", "0A000", "rlsproxy does not accept replication connections"));
    let f = refused_startup(proxy.addr, &[("replication", "true")]).await;
    assert_eq!(sev_code_msg(&f).1, "0A000");
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn allowed_startup_settings_are_applied() {
    let proxy = proxy::start_default().await;
    let token = proxy.token("1");
    let mut cfg = proxy.client_config(&token);
    cfg.application_name("security-test-app");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect with application_name");
    tokio::spawn(conn);
    let row = client.query_one("SHOW application_name", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "security-test-app");

    // Any case of the name, as the server accepts it.
    let (mut c, _) = raw_login(&proxy, &token, &[("datestyle", "SQL, DMY"), ("application_name", "raw-app")]).await;
    assert_eq!(first_column(&raw_query(&mut c, "SHOW DateStyle").await), ["SQL, DMY"]);
    assert_eq!(first_column(&raw_query(&mut c, "SHOW application_name").await), ["raw-app"]);
    assert_eq!(first_column(&raw_query(&mut c, "SELECT title FROM documents ORDER BY id").await), ACME);
}

/// A startup packet for protocol 3.2 with an option PostgreSQL does not know.
fn startup_3_2() -> Vec<u8> {
    let mut body = ((3i32 << 16) | 2).to_be_bytes().to_vec();
    for s in ["user", "alice", "database", "app", "_pq_.security_test", "1"] {
        body.extend(raw::cstr(s));
    }
    body.push(0);
    body
}

/// The NegotiateProtocolVersion is the one a PostgreSQL that speaks 3.0 sends, byte for byte:
/// the newest version as a whole protocol number (196608; libpq 18 reads it so, and a 0 there
/// would be version 0.0 to a client that asked for 3.2), then the options it did not know.
#[tokio::test]
async fn protocol_3_2_is_negotiated_down_to_3_0() {
    let mut expected = (3i32 << 16).to_be_bytes().to_vec();
    expected.extend(1i32.to_be_bytes());
    expected.extend(raw::cstr("_pq_.security_test"));
    let expected = (b'v', expected);
    let mut direct = raw::connect(crate::common::postgres().addr()).await;
    direct.send_untagged(&startup_3_2()).await;
    let from_postgres = direct.read_message().await;
    // PostgreSQL 18 and later speak 3.2 themselves and answer with 196610; before, exactly so.
    if from_postgres.1.starts_with(&(3i32 << 16).to_be_bytes()) {
        assert_eq!(from_postgres, expected, "PostgreSQL's answer");
    }

    let proxy = proxy::start_default().await;
    let token = proxy.token("1");
    let mut c = raw::connect(proxy.addr).await;
    c.send_untagged(&startup_3_2()).await;
    assert_eq!(c.read_message().await, expected, "the proxy's answer");
    let (tag, body) = c.read_message().await;
    assert_eq!((tag as char, body), ('R', 3i32.to_be_bytes().to_vec()));
    c.send_password(&token).await;
    let msgs = c.read_until_ready().await;
    assert!(tags(&msgs).contains('K'), "{}", tags(&msgs));
    assert_eq!(first_column(&raw_query(&mut c, "SELECT title FROM documents ORDER BY id").await), ACME);
}

#[tokio::test]
async fn gssenc_request_is_declined_and_startup_continues() {
    let proxy = proxy::start_default().await;
    let token = proxy.token("1");
    let mut c = raw::connect(proxy.addr).await;
    c.send_untagged(&80_877_104i32.to_be_bytes()).await;
    assert_eq!(c.read_byte().await, b'N');
    c.send_startup(&[("user", "alice"), ("database", "app")]).await;
    assert_eq!(c.read_message().await.0, b'R');
    c.send_password(&token).await;
    c.read_until_ready().await;
    assert_eq!(first_column(&raw_query(&mut c, "SELECT title FROM documents ORDER BY id").await), ACME);
}

/// Sends `bytes` as the first bytes of a connection; the proxy must close it
/// (after at most an ErrorResponse) without ever asking for a password.
async fn garbage(addr: std::net::SocketAddr, bytes: &[u8]) -> Option<std::collections::HashMap<char, String>> {
    let mut c: RawClient = raw::connect(addr).await;
    let _ = c.try_send_raw(bytes).await;
    match c.try_read_message(std::time::Duration::from_secs(5)).await {
        Ok(None) => None,
        Ok(Some((b'E', body))) => {
            assert_closed(&mut c).await;
            Some(raw::error_fields(&body))
        }
        Ok(Some((tag, body))) => panic!("unexpected reply '{}' {body:?} to {bytes:?}", tag as char),
        Err(e) => {
            assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "no reply and not closed after {bytes:?}");
            None
        }
    }
}

#[tokio::test]
async fn invalid_startup_lengths_and_garbage_are_harmless() {
    let proxy = proxy::start_default().await;
    // Lengths below the minimum, negative, and above the startup packet limit.
    for len in [0i32, 4, 7, -1, 10_001, i32::MAX] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(raw::PROTOCOL_3_0.to_be_bytes());
        assert_eq!(garbage(proxy.addr, &bytes).await, None, "length {len}");
    }
    // Truncated: a length promising more than is sent, then EOF.
    {
        let mut c = raw::connect(proxy.addr).await;
        c.send_raw(&100i32.to_be_bytes()).await;
        c.send_raw(&raw::PROTOCOL_3_0.to_be_bytes()).await;
        let stream = c.into_inner();
        drop(stream);
    }
    let http = garbage(proxy.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(http, None);
    // A fake TLS ClientHello while no TLS is configured.
    assert_eq!(garbage(proxy.addr, &[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]).await, None);
    // A well-framed packet with an unknown version code.
    let mut unknown = 8i32.to_be_bytes().to_vec();
    unknown.extend(0x0004_0000i32.to_be_bytes());
    let f = garbage(proxy.addr, &unknown).await.expect("an ErrorResponse for protocol 4.0");
    assert_eq!(sev_code_msg(&f), ("FATAL", "0A000", "unsupported frontend protocol: rlsproxy speaks 3.0"));
    // A startup packet whose parameters are not NUL-terminated.
    let params = b"user\0alice\0dat";
    let mut malformed = (8 + params.len() as i32).to_be_bytes().to_vec();
    malformed.extend(raw::PROTOCOL_3_0.to_be_bytes());
    malformed.extend(params);
    let _ = garbage(proxy.addr, &malformed).await;
    // Random bytes.
    let noise: Vec<u8> = [0xde, 0xad, 0xbe, 0xef].into_iter().chain((0..60u32).map(|i| (i * 37 + 11) as u8)).collect();
    let _ = garbage(proxy.addr, &noise).await;
    assert_serves(&proxy).await;
}

/// Allowed settings in `options` apply as separate startup parameters would, escapes and
/// long options read as PostgreSQL reads them; through libpq's `PGOPTIONS` too.
#[tokio::test]
async fn allowed_settings_in_options_apply() {
    let proxy = proxy::start_default().await;
    let token = proxy.token("1");
    let options = "-c application_name=with\\ space --statement-timeout=5s -clock_timeout=2s";
    let (mut c, _) = raw_login(&proxy, &token, &[("options", options), ("lock_timeout", "3s")]).await;
    let shown = raw_query(
        &mut c,
        "SELECT current_setting('application_name') UNION ALL SELECT current_setting('statement_timeout') \
         UNION ALL SELECT current_setting('lock_timeout') UNION ALL SELECT current_setting('app.current_tenant')",
    )
    .await;
    assert_eq!(first_column(&shown), ["with space", "5s", "3s", "1"], "a startup parameter overrides options");

    let port = proxy.addr.port();
    let conninfo = format!("host=127.0.0.1 port={port} user=alice dbname=app password={token} sslmode=disable");
    let out = tokio::task::spawn_blocking(move || {
        crate::common::postgres()
            .psql()
            .env("PGOPTIONS", "-c application_name=x -c statement_timeout=5s -c lock_timeout=2s")
            .arg(conninfo)
            .args(["-At", "-c", "SHOW application_name", "-c", "SHOW statement_timeout", "-c", "SHOW lock_timeout"])
            .output()
            .expect("run psql")
    })
    .await
    .expect("psql task");
    // psql also sends application_name=psql as a parameter of its own, which wins over
    // options, as with PostgreSQL itself.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "psql\n5s\n2s\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
}

/// With `upstream.database` unset, a client reaches only the databases of
/// `upstream.allowed_databases`; another (here `postgres`, which the proxy's role may connect
/// to and the doctor never audited) gets FATAL 3D000 before any server connection.
#[tokio::test]
async fn only_the_allowed_databases_are_served() {
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.upstream.database = None;
    cfg.upstream.allowed_databases = vec!["app".into()];
    let proxy = proxy::start(cfg).await;
    let token = proxy.token("1");
    assert_serves(&proxy).await;
    let mut other = proxy.client_config(&token);
    other.dbname("postgres");
    let err = other.connect(tokio_postgres::NoTls).await.err().expect("database postgres served");
    assert_eq!(
        server_error(&err),
        ("FATAL".into(), "3D000".into(), "rlsproxy does not serve database \"postgres\"".into())
    );
    assert_eq!(proxy.pool.stats().0, 1, "no server connection was opened for it");
}
