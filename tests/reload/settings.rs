//! SIGHUP applies pool sizes (seen in `/admin/pools`), guard lists (at an open session's next
//! statement), the log filter, the HS256 secret, the admin token and the message limit; keys that need a restart
//! are named and keep their value.

use crate::common::proxy::SECRET;
use crate::common::wire::Msgs;
use crate::process::{ADMIN_TOKEN, ProxyProcess};
use crate::{RELOADED, RELOADS_OK, tenant_rows};

fn hs256_token(tenant: &str) -> String {
    token_signed_with(SECRET, tenant)
}

fn token_signed_with(secret: &str, tenant: &str) -> String {
    let jwt =
        rlsproxy::config::Config::from_toml(&format!("[upstream]\ndatabase = \"app\"\n[jwt]\nsecret = \"{secret}\"\n"))
            .unwrap()
            .jwt;
    let request = rlsproxy::auth::MintRequest {
        tenant: tenant.into(),
        subject: Some(format!("user-of-{tenant}")),
        role: None,
        ttl: std::time::Duration::from_secs(3600),
        extra: vec![],
    };
    rlsproxy::auth::mint(&jwt, &request).unwrap()
}

fn rest(forbidden: &str, log_filter: &str, tenant_setting: &str) -> String {
    format!(
        "[jwt]\nsecret = \"{SECRET}\"\nleeway_s = 0\n\n\
         [guard]\nforbidden_objects = [\"pg_stat_activity\"{forbidden}]\n\n\
         [log]\nfilter = \"{log_filter}\"\n\n\
         [context]\ntenant_setting = \"{tenant_setting}\"\n\n\
         [reload]\nwatch_interval_s = 0\n"
    )
}

async fn pool_size(proxy: &ProxyProcess) -> u64 {
    let (status, body) = proxy.get("/admin/pools", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let pools: serde_json::Value = serde_json::from_str(&body).unwrap();
    pools["size"].as_u64().expect("size")
}

#[tokio::test]
async fn sighup_applies_pool_size_guard_lists_and_log_level() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let config = |size, forbidden, filter| {
        ProxyProcess::render(port, admin, &rest(forbidden, filter, "app.current_tenant"))
            .replace("[pool]\nsize = 4\n", &format!("[pool]\nsize = {size}\n"))
    };
    let proxy = ProxyProcess::start(dir, port, admin, &config(4, "", "info"));
    assert_eq!(pool_size(&proxy).await, 4);
    let open = proxy.connect(&hs256_token("1")).await;
    assert_eq!(tenant_rows(&open).await, 3, "documents may be read");
    // At info, a session's end logs no debug line.
    drop(proxy.connect(&hs256_token("2")).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(proxy.lines_with("relay finished"), Vec::<String>::new());

    proxy.rewrite_config(&config(2, ", \"documents\"", "info,rlsproxy=debug"));
    proxy.sighup();
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("changed=\"guard.forbidden_objects, log.filter, pool.size\""), "{line}");
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(1.0));
    assert_eq!(pool_size(&proxy).await, 2);
    assert_eq!(proxy.metric("rlsproxy_pool_max_connections").await, Some(2.0));

    // The open session's next statement meets the new guard.
    let refused = open.query_one("SELECT count(*) FROM documents", &[]).await.expect_err("now forbidden");
    let (code, message) = crate::common::proxy::db_error(&refused);
    assert_eq!(code, "42501");
    assert_eq!(
        message,
        "rlsproxy refused the statement: documents, which shows or touches other sessions (rule forbidden_object)"
    );
    assert_eq!(open.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1, "the session goes on");

    // The log filter is debug now: a session's end logs its debug line.
    drop(proxy.connect(&hs256_token("2")).await);
    proxy.wait_for_lines("relay finished", 1).await;
    let changed = proxy.wait_for_lines("log filter changed", 1).await;
    assert!(changed.contains("filter=\"info,rlsproxy=debug\""), "{changed}");
}

#[tokio::test]
async fn restart_only_keys_are_named_and_keep_their_running_values() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let config = |setting| ProxyProcess::render(port, admin, &rest("", "info", setting));
    let proxy = ProxyProcess::start(dir, port, admin, &config("app.current_tenant"));
    let open = proxy.connect(&hs256_token("1")).await;

    let moved = config("app.other_tenant").replace("size = 4", "size = 3");
    proxy.rewrite_config(&moved);
    proxy.sighup();
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("changed=\"pool.size\""), "only the reloadable change is applied: {line}");
    let warnings = proxy.lines_with("needs a restart");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(" WARN ") && warnings[0].contains("key=\"context.tenant_setting\""), "{warnings:?}");
    assert_eq!(pool_size(&proxy).await, 3);

    // The injection still sets app.current_tenant, for open and new sessions alike.
    let fresh = proxy.connect(&hs256_token("2")).await;
    for (client, tenant) in [(&open, "1"), (&fresh, "2")] {
        let row = client.query_one("SELECT current_setting('app.current_tenant')", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), tenant);
    }
    assert_eq!(tenant_rows(&fresh).await, 2);
}

/// A smaller `pool.size` closes idle connections above it at once and lent ones only when they
/// come back; a larger one serves a waiting client at once.
#[tokio::test]
async fn pool_reconfigure_shrinks_without_touching_lent_connections() {
    let p = crate::common::proxy::start_default().await;
    let (pool, owner) = (p.pool.clone(), bytes::Bytes::from_static(b"owner"));
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(pool.acquire("app", &owner, &[]).await.expect("acquire"));
    }
    leases.pop().expect("lease").give_back();
    assert_eq!(pool.stats(), (3, 1), "three open, one of them idle");

    let mut cfg = p.config.pool.clone();
    cfg.size = 1;
    pool.reconfigure(&cfg, &[]);
    assert_eq!(pool.stats(), (2, 0), "the idle one is closed, the two lent ones are not");
    for lease in &mut leases {
        let outcome =
            lease.run_batch(Msgs::new().query("SELECT 1").bytes()).await.expect("a lent connection still works");
        assert!(outcome.error.is_none());
    }
    leases.pop().expect("lease").give_back();
    assert_eq!(pool.stats(), (1, 0), "above the size: closed when given back");
    leases.pop().expect("lease").give_back();
    assert_eq!(pool.stats(), (1, 1), "at the size: kept idle");

    // Full (one lent); a waiting client gets its connection as soon as the size grows.
    let lent = pool.acquire("app", &owner, &[]).await.expect("acquire");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire("app", &bytes::Bytes::from_static(b"other"), &[]).await.map(|_| ()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "waits while the pool is full");
    cfg.size = 2;
    pool.reconfigure(&cfg, &[]);
    let served = tokio::time::timeout(std::time::Duration::from_millis(1500), waiter).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "served after the size grew: {served:?}");
    drop(lent);
    p.handle.shutdown();
}

/// New `jwt.allowed_roles` pass the start-up check first: a role the proxy's user inherits is
/// refused, naming the key, and the running roles stay.
#[tokio::test]
async fn a_reload_refuses_allowed_roles_the_upstream_user_inherits() {
    let pg = crate::common::postgres();
    let admin = pg.superuser_client("postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE reload_inherited NOLOGIN; \
             CREATE ROLE reload_user LOGIN INHERIT PASSWORD 'reload-user-password' IN ROLE reload_inherited",
        )
        .await
        .expect("create the roles");
    let (dir, port, admin_port) = ProxyProcess::prepare();
    let config = |jwt_extra: &str| {
        ProxyProcess::render(port, admin_port, &format!("[jwt]\nsecret = \"{SECRET}\"\n{jwt_extra}"))
            .replace("user = \"app_proxy\"", "user = \"reload_user\"")
            .replace("password = \"app-proxy-test-password\"", "password = \"reload-user-password\"")
    };
    let proxy = ProxyProcess::start(dir, port, admin_port, &config(""));
    proxy.rewrite_config(&config("role_claim = \"role\"\nallowed_roles = [\"reload_inherited\"]\n"));
    proxy.sighup();
    let line = proxy.wait_for_lines(crate::REFUSED, 1).await;
    assert!(
        line.contains(
            "error=jwt.allowed_roles: unsafe upstream role: upstream.user inherits the privileges of reload_inherited"
        ),
        "{line}"
    );
    assert_eq!(proxy.metric(crate::RELOADS_ERROR).await, Some(1.0));
    assert_eq!(proxy.metric(RELOADS_OK).await, None);
    drop(proxy);
    admin.batch_execute("DROP ROLE reload_user; DROP ROLE reload_inherited").await.expect("drop the roles");
}

#[tokio::test]
async fn sighup_replaces_the_hs256_secret_and_the_admin_token() {
    const NEW_SECRET: &str = "a-new-hs256-secret-for-tests-0123456789";
    const NEW_ADMIN_TOKEN: &str = "a-new-admin-token-0123456789";
    let (dir, port, admin) = ProxyProcess::prepare();
    let config = ProxyProcess::render(port, admin, &rest("", "info", "app.current_tenant"));
    let proxy = ProxyProcess::start(dir, port, admin, &config);
    let open = proxy.connect(&hs256_token("1")).await;
    open.batch_execute("BEGIN").await.unwrap();
    assert_eq!(proxy.get("/admin/clients", Some(ADMIN_TOKEN)).await.0, 200);

    proxy.rewrite_config(
        &config
            .replace(&format!("token = \"{ADMIN_TOKEN}\""), &format!("token = \"{NEW_ADMIN_TOKEN}\""))
            .replace(&format!("secret = \"{SECRET}\""), &format!("secret = \"{NEW_SECRET}\"")),
    );
    proxy.sighup();
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("admin.token") && line.contains("jwt.secret"), "{line}");
    assert!(!line.contains(NEW_SECRET) && !line.contains(NEW_ADMIN_TOKEN), "no secret in the log: {line}");

    assert_eq!(proxy.get("/admin/clients", Some(ADMIN_TOKEN)).await.0, 401, "the old admin token is gone");
    assert_eq!(proxy.get("/admin/clients", Some(NEW_ADMIN_TOKEN)).await.0, 200);
    let refused = proxy.refusal(&hs256_token("1")).await;
    assert_eq!(refused, ("28P01".to_string(), "token signature is invalid".to_string()));
    let fresh = proxy.connect(&token_signed_with(NEW_SECRET, "2")).await;
    assert_eq!(tenant_rows(&fresh).await, 2);
    // The session verified with the old secret goes on.
    assert_eq!(tenant_rows(&open).await, 3);
    open.batch_execute("COMMIT").await.expect("commit");
}

#[tokio::test]
async fn sighup_applies_a_smaller_message_limit_to_open_sessions() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let config = ProxyProcess::render(port, admin, &rest("", "info", "app.current_tenant"));
    let proxy = ProxyProcess::start(dir, port, admin, &config);
    let client = proxy.connect(&hs256_token("1")).await;
    let big = format!("SELECT '{}' AS x", "a".repeat(2000));
    assert_eq!(big.len(), 2014);
    client.simple_query(&big).await.expect("2 kB is far under the default limit");

    proxy.rewrite_config(&format!("{config}\n[limits]\nmax_message_bytes = 1024\n"));
    proxy.sighup();
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("limits.max_message_bytes"), "{line}");
    client.simple_query("SELECT 1").await.expect("small messages still pass");
    let err = client.simple_query(&big).await.expect_err("over the new limit");
    assert_eq!(
        crate::common::proxy::db_error(&err),
        ("54000".to_string(), "rlsproxy: message 'Q' of 2020 bytes exceeds the limit of 1024 bytes".to_string())
    );
}
