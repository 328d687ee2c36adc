//! The guard's own resource limits: a statement longer than `guard.max_statement_bytes` is
//! refused without being parsed, and a long statement being parsed does not hold up the
//! other sessions of the relay thread.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::common::postgres;
use crate::common::proxy;
use crate::common::raw;
use crate::session::{self, Protocol, Session, Transcript};

#[tokio::test]
async fn a_statement_over_the_guard_limit_is_refused_unparsed_with_54000() {
    let _role = crate::harness::shared_role().await;
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.max_statement_bytes = 4096;
    let p = proxy::start(cfg).await;
    let long = format!("SELECT '{}'", "x".repeat(4089));
    assert_eq!(long.len(), 4098);
    for protocol in [Protocol::Simple, Protocol::Parse] {
        let mut s = Session::from_raw(session::raw_login(&p, &p.token("1")).await);
        let mut reply = Transcript::default();
        s.run(protocol, &long, &mut reply).await;
        let first = reply.errors.first().map(|e| (e.code.as_str(), e.message.as_str()));
        assert_eq!(
            first,
            Some((
                "54000",
                "rlsproxy refused the statement: 4098 bytes of SQL text, more than guard.max_statement_bytes (4096) \
                 (rule statement_too_long)"
            )),
            "{protocol:?}"
        );
        let mut next = Transcript::default();
        s.run(protocol, "SELECT 'still here'", &mut next).await;
        assert_eq!(next.first_column(), ["still here"], "{protocol:?}: {next:?}");
        s.close().await;
    }
    p.handle.shutdown();
}

/// One thread runs the proxy and both clients: while the guard parses tenant 1's long text,
/// tenant 2's queries must go on being answered (before, the relay thread parsed it and
/// every session on it waited).
#[tokio::test(flavor = "current_thread")]
async fn a_long_statement_being_parsed_does_not_hold_up_other_sessions() {
    let _role = crate::harness::shared_role().await;
    let p = proxy::start(proxy::base_config(postgres())).await;
    let other = p.connect(&p.token("2")).await;
    let mut c = session::raw_login(&p, &p.token("1")).await;
    // Half the default guard.max_statement_bytes: parsed for seconds (more on a loaded
    // machine), then refused.
    let long = format!("SELECT 1 WHERE 0 IN ({}0); SELECT set_config('a.b', 'c', false)", "0,".repeat(250_000));
    assert!(long.len() < 1 << 20);
    c.timeout = Duration::from_secs(300);
    c.send_query(&long).await;
    let sent = Instant::now();
    let answered = Cell::new(None);
    let long_check = async {
        let msgs = c.read_until_ready().await;
        answered.set(Some(Instant::now()));
        msgs.iter().find(|(tag, _)| *tag == b'E').map(|(_, body)| raw::error_fields(body)[&'C'].clone())
    };
    let others = async {
        let mut done = Vec::new();
        while answered.get().is_none() {
            let started = Instant::now();
            other.simple_query("SELECT 1").await.expect("tenant 2's query");
            done.push((started, Instant::now()));
        }
        done
    };
    let (code, done) = tokio::join!(long_check, others);
    assert_eq!(code.as_deref(), Some("42501"), "refused for set_config");
    let answered = answered.get().expect("answered");
    let took = answered.duration_since(sent);
    assert!(took > Duration::from_millis(600), "the check took only {took:?}: too quick to tell");
    let window = sent + Duration::from_millis(300);
    let during = done.iter().filter(|(start, end)| *start >= window && *end <= answered).count();
    assert!(during >= 10, "tenant 2 got {during} answers while tenant 1's text was checked for {took:?}");
    p.handle.shutdown();
}
