//! A refusal inside a pipeline the server is already skipping: after an error PostgreSQL
//! skips every message up to Sync without a word, a FunctionCall or Parse included. The
//! proxy's refusal of such a message must look exactly like that position's own handling:
//! the bytes the client gets equal what PostgreSQL sends directly for the same sequence
//! without the refused message.

use rlsproxy::config::PoolMode;

use crate::common::raw::{self, RawClient};
use crate::common::{Postgres, postgres, proxy};
use crate::desync::frame;
use crate::raw_login;

/// A raw client straight to PostgreSQL (`trust_user`: no password exchange).
async fn direct() -> RawClient {
    let mut c = raw::connect(postgres().addr()).await;
    c.send_startup(&[("user", Postgres::TRUST_USER), ("database", Postgres::APP_DB)]).await;
    c.read_until_ready().await;
    c
}

/// Every message up to ReadyForQuery, as the bytes on the wire.
async fn wire_bytes(c: &mut RawClient, sent: &[u8]) -> Vec<u8> {
    c.send_raw(sent).await;
    c.read_until_ready().await.iter().flat_map(|(tag, body)| frame(*tag, body)).collect()
}

fn failing_start() -> Vec<u8> {
    let mut out = frame(b'P', &[raw::cstr(""), raw::cstr("SELECT 1/0"), vec![0, 0]].concat());
    out.extend(frame(b'B', &[raw::cstr(""), raw::cstr(""), vec![0, 0, 0, 0, 0, 0]].concat()));
    out.extend(frame(b'E', &[raw::cstr(""), vec![0, 0, 0, 0]].concat()));
    out
}

async fn refusal_after_an_error_is_skipped(mode: PoolMode) {
    let mut expected = direct().await;
    let mut sync = failing_start();
    sync.extend(frame(b'S', b""));
    let direct_bytes = wire_bytes(&mut expected, &sync).await;

    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    let proxy = proxy::start(cfg).await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    // A fast-path call of int4pl (OID 177): refused (rule function_call).
    let call = frame(b'F', &[177u32.to_be_bytes().to_vec(), vec![0, 0, 0, 0, 0, 0]].concat());
    let parse = frame(b'P', &[raw::cstr("x"), raw::cstr("SELECT set_config('a.b', 'c', false)"), vec![0, 0]].concat());
    for refused in [call, parse] {
        let mut sent = failing_start();
        sent.extend(&refused);
        sent.extend(frame(b'S', b""));
        let got = wire_bytes(&mut c, &sent).await;
        assert_eq!(got, direct_bytes, "refused '{}'", refused[0] as char);
        // Nothing else follows: the next query's reply comes next.
        let next = wire_bytes(&mut c, &frame(b'Q', &raw::cstr("SELECT 1"))).await;
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
