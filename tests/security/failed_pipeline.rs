//! A refusal inside a pipeline the server is already skipping: after an error PostgreSQL
//! skips every message up to Sync without a word, a FunctionCall or Parse included. The
//! proxy's refusal of such a message must look exactly like that position's own handling:
//! the bytes the client gets equal what PostgreSQL sends directly for the same sequence
//! without the refused message.

use rlsproxy::config::PoolMode;

use crate::common::raw::{self, RawClient};
use crate::common::{Postgres, postgres, proxy};
use crate::{Msgs, raw_login};

/// A raw client straight to PostgreSQL (`trust_user`: no password exchange).
async fn direct() -> RawClient {
    let mut c = raw::connect(postgres().addr()).await;
    c.send_startup(&[("user", Postgres::TRUST_USER), ("database", Postgres::APP_DB)]).await;
    c.read_until_ready().await;
    c
}

/// Every message up to ReadyForQuery, as the bytes on the wire.
async fn wire_bytes(c: &mut RawClient, sent: &Msgs) -> Vec<u8> {
    c.send_msgs(sent).await;
    let reply = c.read_until_ready().await;
    reply.iter().fold(Msgs::new(), |all, (tag, body)| all.msg(*tag, body)).0
}

/// Parse, Bind and Execute of a division by zero, without Sync.
fn failing_start() -> Msgs {
    Msgs::new().unsynced("SELECT 1/0", &[])
}

async fn refusal_after_an_error_is_skipped(mode: PoolMode) {
    let mut expected = direct().await;
    let direct_bytes = wire_bytes(&mut expected, &failing_start().sync()).await;

    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    let proxy = proxy::start(cfg).await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    // A fast-path call of int4pl (OID 177): refused (rule function_call).
    let call = Msgs::new().function_call(177, &[], &[], 0);
    let parse = Msgs::new().parse("x", "SELECT set_config('a.b', 'c', false)", &[]);
    for refused in [call, parse] {
        let sent = failing_start().then(&refused).sync();
        let got = wire_bytes(&mut c, &sent).await;
        assert_eq!(got, direct_bytes, "refused {}", refused.tags());
        // Nothing else follows: the next query's reply comes next.
        let next = wire_bytes(&mut c, &Msgs::new().query("SELECT 1")).await;
        assert_eq!(next[0], b'T', "{next:?}");
    }
}

#[tokio::test]
async fn a_refusal_after_an_error_in_the_pipeline_is_skipped_session_mode() {
    refusal_after_an_error_is_skipped(PoolMode::Session).await;
}

#[tokio::test]
async fn a_refusal_after_an_error_in_the_pipeline_is_skipped_transaction_mode() {
    refusal_after_an_error_is_skipped(PoolMode::Transaction).await;
}
