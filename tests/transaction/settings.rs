//! Startup settings are in effect in every transaction, whatever server
//! connection serves it, and the ParameterStatus messages a client receives
//! only ever carry its own values.

use crate::common::postgres;
use crate::common::proxy::TestProxy;
use crate::common::raw::{self, RawClient};
use crate::common::reply::Reply;
use crate::common::wire::Msgs;
use crate::{start, superuser};

/// A raw client past authentication, with every ParameterStatus it received.
struct Raw {
    conn: RawClient,
    /// (name, value) of every ParameterStatus, in order.
    params: Vec<(String, String)>,
}

impl Raw {
    async fn open(proxy: &TestProxy, tenant: &str, settings: &[(&str, &str)]) -> Raw {
        let (conn, startup) = raw::login(proxy.addr, &proxy.token(tenant), settings).await;
        let startup = Reply::from(startup);
        assert!(startup.errors.is_empty(), "startup failed: {startup:?}");
        Raw { conn, params: startup.params }
    }

    /// The next reply; its ParameterStatus values are kept.
    async fn reply(&mut self) -> Reply {
        let mut reply = self.conn.reply().await;
        self.params.append(&mut reply.params);
        reply
    }

    async fn query(&mut self, sql: &str) -> Reply {
        self.conn.send_query(sql).await;
        self.reply().await
    }

    /// The values of every ParameterStatus received for `name`.
    fn reported(&self, name: &str) -> Vec<&str> {
        self.params.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

const SHOW: &str = "SELECT current_setting('application_name'), current_setting('DateStyle'), \
                    current_setting('app.current_tenant')";

/// (tenant, application_name, DateStyle) of the two clients.
const CLIENTS: [(&str, &str, &str); 2] = [("1", "tx-app-a", "SQL, DMY"), ("2", "tx-app-b", "Postgres, YMD")];

/// Two clients with different startup settings take turns on one server connection
/// (`pool.size = 1`), checking their settings in simple, extended and explicit-block
/// transactions; returns them with every ParameterStatus they received.
async fn take_turns() -> Vec<Raw> {
    let proxy = start(1, 10_000).await;
    // How PostgreSQL itself prints a date in each style.
    let su = superuser().await;
    let mut dates = Vec::new();
    for (_, _, datestyle) in CLIENTS {
        su.batch_execute(&format!("SET DateStyle = '{datestyle}'")).await.unwrap();
        dates.push(su.query_one("SELECT date '2024-03-05'::text", &[]).await.unwrap().get::<_, String>(0));
    }
    assert_ne!(dates[0], dates[1]);
    let mut raws = Vec::new();
    for (tenant, app, datestyle) in CLIENTS {
        raws.push(Raw::open(&proxy, tenant, &[("application_name", app), ("DateStyle", datestyle)]).await);
    }
    for round in 0..6 {
        for ((raw, (tenant, app, datestyle)), date) in raws.iter_mut().zip(CLIENTS).zip(&dates) {
            let own = vec![vec![app.to_string(), datestyle.to_string(), tenant.to_string()]];
            assert_eq!(raw.query(SHOW).await.texts(), own, "simple, round {round}");
            raw.conn.send_msgs(&Msgs::new().run(SHOW, &[])).await;
            assert_eq!(raw.reply().await.texts(), own, "extended, round {round}");
            assert!(raw.query("BEGIN").await.errors.is_empty());
            assert_eq!(raw.query(SHOW).await.texts(), own, "block, round {round}");
            let seen = raw.query("SELECT date '2024-03-05'::text").await.texts();
            assert_eq!(seen, [[date.as_str()]], "DateStyle {datestyle} applies, round {round}");
            assert!(raw.query("COMMIT").await.errors.is_empty());
        }
    }
    raws
}

#[tokio::test]
async fn startup_settings_hold_in_every_transaction() {
    let raws = take_turns().await;
    for (raw, (_, app, datestyle)) in raws.iter().zip(CLIENTS) {
        // At startup, the client was told its own values.
        assert_eq!(raw.reported("application_name").first(), Some(&app));
        assert_eq!(raw.reported("DateStyle").first(), Some(&datestyle));
    }
}

/// The connection changes identity at every turn (DISCARD ALL, then the client's settings):
/// the client must not be told of values it never had, even transiently (a driver tracks
/// them: pgjdbc rejects a DateStyle or client_encoding it cannot parse, libpq switches its
/// encoding on client_encoding).
#[tokio::test]
async fn parameter_status_only_ever_carries_the_clients_own_values() {
    let raws = take_turns().await;
    for (raw, (_, app, datestyle)) in raws.iter().zip(CLIENTS) {
        let (apps, styles) = (raw.reported("application_name"), raw.reported("DateStyle"));
        assert!(
            apps.iter().all(|v| *v == app) && styles.iter().all(|v| *v == datestyle),
            "reported to {app}: application_name {apps:?}, DateStyle {styles:?}"
        );
    }
}

/// PostgreSQL keeps startup-packet settings across `RESET ALL` and `DISCARD ALL` (they are the
/// session's defaults); drivers send these on pool release (asyncpg: `RESET ALL`).
#[tokio::test]
async fn startup_settings_survive_the_clients_own_reset_all_and_discard_all() {
    // PostgreSQL itself, with the settings in psql's startup packet.
    let pg = postgres();
    let out = pg
        .psql()
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=app password={} application_name=tx-direct \
             options='-c DateStyle=SQL,DMY' sslmode=disable",
            pg.port(),
            pg.superuser_password()
        ))
        .args([
            "-At",
            "-c",
            "RESET ALL",
            "-c",
            "DISCARD ALL",
            "-c",
            "SELECT current_setting('application_name'), current_setting('DateStyle')",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tx-direct|SQL, DMY", "{out:?}");
    // The same through the proxy, whose server connections got the settings from it.
    let proxy = start(2, 10_000).await;
    let settings = [("application_name", "tx-app-reset"), ("DateStyle", "SQL, DMY")];
    let own = vec![vec!["tx-app-reset".to_string(), "SQL, DMY".to_string(), "1".to_string()]];
    let mut wrong = Vec::new();
    for reset in ["RESET ALL", "DISCARD ALL"] {
        // A new session each time: it may get the connection the previous one reset.
        let mut raw = Raw::open(&proxy, "1", &settings).await;
        let seen = raw.query(SHOW).await.texts();
        if seen != own {
            wrong.push(format!("a new session, before its {reset}: {seen:?}"));
        }
        assert!(raw.query(reset).await.errors.is_empty(), "{reset}");
        for i in 0..3 {
            let seen = raw.query(SHOW).await.texts();
            if seen != own {
                wrong.push(format!("after {reset}, transaction {i}: {seen:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "startup settings lost: {wrong:#?}");
}
