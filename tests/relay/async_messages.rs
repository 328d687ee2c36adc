//! Messages the server sends outside of a query's rows: notifications (also
//! while the client is idle), notices, and ParameterStatus after a SET.

use tokio_postgres::AsyncMessage;

use super::{RawSession, Session};
use crate::common::proxy;
use crate::common::queries::value;

#[tokio::test]
async fn listen_receives_a_notify_from_another_session() {
    let proxy = proxy::start_default().await;
    let mut listener = Session::open(&proxy, &proxy.token("1")).await;
    listener.client.batch_execute("LISTEN relay_channel").await.unwrap();
    let notifier = proxy.connect(&proxy.token("1")).await;
    notifier.batch_execute("NOTIFY relay_channel, 'first'").await.unwrap();
    notifier.execute("SELECT pg_notify('relay_channel', $1)", &[&"second"]).await.unwrap();
    // Delivered while the listener is idle: nothing it sends carries them.
    for payload in ["first", "second"] {
        match listener.next_message().await {
            AsyncMessage::Notification(n) => {
                assert_eq!((n.channel(), n.payload()), ("relay_channel", payload));
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn notices_reach_the_client() {
    let proxy = proxy::start_default().await;
    let mut session = Session::open(&proxy, &proxy.token("2")).await;
    session.client.batch_execute("DROP TABLE IF EXISTS relay_never_created").await.unwrap();
    match session.next_message().await {
        AsyncMessage::Notice(n) => {
            assert_eq!(n.severity(), "NOTICE");
            assert_eq!(n.code().code(), "00000");
            assert_eq!(n.message(), "table \"relay_never_created\" does not exist, skipping");
        }
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test]
async fn raise_notice_in_a_do_block_arrives_as_a_notice() {
    // DO blocks are refused by the statement guard; this test is about relaying notices.
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.guard.enabled = false;
    let proxy = proxy::start(cfg).await;
    let mut session = Session::open(&proxy, &proxy.token("1")).await;
    session
        .client
        .batch_execute(
            "DO $$ BEGIN RAISE NOTICE 'relay notice % of %', 1, current_setting('app.current_tenant') \
             USING DETAIL = 'detail text', HINT = 'hint text'; END $$",
        )
        .await
        .unwrap();
    match session.next_message().await {
        AsyncMessage::Notice(n) => {
            assert_eq!(n.severity(), "NOTICE");
            assert_eq!(n.code().code(), "00000");
            assert_eq!(n.message(), "relay notice 1 of 1");
            assert_eq!(n.detail(), Some("detail text"));
            assert_eq!(n.hint(), Some("hint text"));
        }
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test]
async fn set_is_reported_by_parameter_status_and_show() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[("application_name", "relay-startup")]).await;
    assert_eq!(s.params["application_name"], "relay-startup");
    assert_eq!(s.params["client_encoding"], "UTF8");
    assert!(s.params.contains_key("server_version"), "{:?}", s.params);
    assert_eq!(s.query("SHOW application_name").await.column(), ["relay-startup"]);

    let set = s.query("SET application_name = 'relay-x'").await;
    assert_eq!(set.params, [("application_name".to_owned(), "relay-x".to_owned())]);
    assert_eq!(set.tags, ["SET"]);
    assert_eq!(s.query("SHOW application_name").await.column(), ["relay-x"]);
    let set = s.query("SET DateStyle = 'German, DMY'").await;
    assert_eq!(set.params, [("DateStyle".to_owned(), "German, DMY".to_owned())]);
    assert_eq!(s.query("SELECT '2024-02-29'::date").await.column(), ["29.02.2024"]);

    // The same through tokio-postgres.
    let client = proxy.connect(&proxy.token("2")).await;
    client.batch_execute("SET application_name = 'x'").await.unwrap();
    assert_eq!(value(&client, "SHOW application_name").await, "x");
}
