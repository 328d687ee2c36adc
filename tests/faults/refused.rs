//! PostgreSQL refuses the proxy's own connection: its role is at its connection limit
//! (53300, as when `max_connections` is reached), or its password was rotated on the server
//! but not in the proxy. The client gets the server's own words (and, for a refused session,
//! its SQLSTATE), so whoever reads the client's error knows what to fix.

use rlsproxy::config::PoolMode;

use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, db_error};

/// A role of its own, so that its limit and password change nothing for other tests.
async fn upstream_role(limit: i32) {
    let su = postgres().superuser_client("app").await;
    su.batch_execute(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flt_proxy') THEN \
           CREATE ROLE flt_proxy LOGIN NOINHERIT IN ROLE admin_role; END IF; END $$; \
         ALTER ROLE flt_proxy CONNECTION LIMIT {limit} PASSWORD 'flt-proxy-pw'; \
         GRANT SELECT ON documents TO flt_proxy"
    ))
    .await
    .expect("role");
}

fn config(password: &str) -> rlsproxy::config::Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.user = "flt_proxy".into();
    cfg.upstream.password = Some(password.into());
    cfg.pool.mode = PoolMode::Transaction;
    cfg
}

#[tokio::test]
async fn the_servers_refusal_reaches_the_client_in_its_own_words() {
    let _server = SERVER.read().await;
    upstream_role(1).await;
    let proxy = proxy::start(config("flt-proxy-pw")).await;
    let first = proxy.connect(&proxy.token("1")).await;
    first.batch_execute("BEGIN").await.expect("the one connection the role may have");

    // A second server connection is over the role's limit.
    let second = proxy.try_connect(&proxy.token("2")).await;
    let err = match second {
        Ok(client) => client.simple_query("SELECT 1").await.expect_err("no second server connection"),
        Err(e) => e,
    };
    assert_eq!(
        db_error(&err),
        ("53300".into(), "rlsproxy: cannot start the session: too many connections for role \"flt_proxy\"".into())
    );
    first.batch_execute("COMMIT").await.expect("commit");
    proxy.handle.shutdown();

    // The password was changed on the server, not in the proxy.
    upstream_role(5).await;
    let proxy = proxy::start(config("flt-proxy-pw")).await;
    let su = postgres().superuser_client("app").await;
    su.batch_execute(
        "ALTER ROLE flt_proxy PASSWORD 'rotated-pw'; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'flt_proxy'",
    )
    .await
    .expect("rotate");
    let err = proxy.try_connect(&proxy.token("1")).await.expect_err("the proxy's password is wrong");
    assert_eq!(
        db_error(&err),
        (
            "08006".into(),
            "rlsproxy: the upstream server is unavailable: upstream server error 28P01: password \
             authentication failed for user \"flt_proxy\""
                .into()
        )
    );
}
