//! The attack suite (docs/security.md, "Attack suite"). A tenant-1 client tries every known way
//! (and a few more) to read, write or learn tenant 2's rows, or to change its own tenant or
//! role. Every attempt runs in four configurations (`harness::Mode::ALL`): session and
//! transaction pooling (pool of 2) with the statement guard, and session and transaction
//! pooling with the guard OFF but strict mode ON, against a table under strict policies. SQL attempts run over
//! three protocols: simple Query messages (raw client, so every reply is seen), the extended
//! protocol of a real driver (tokio-postgres), and raw Parse/Bind/Execute/Sync messages.
//! Protocol-level attempts (reserved statement names, fast-path calls, startup parameters,
//! forged tokens, other sessions' state) run once per configuration. Every contrib extension
//! is installed. The strict configuration also gets what only strict mode answers (contrib
//! functions that run SQL, role switches through dynamic SQL, shadowing objects: see
//! `attacks/strict.rs`) and scenarios across sessions (`attacks/strict_sessions.rs`).
//!
//! After every attempt (see `harness::Env::judge`): nothing the client received mentions
//! tenant 2's data; the same session then sees exactly tenant 1's rows and context; the
//! superuser finds tenant 2's rows unchanged; and, with the guard on, a statement the guard
//! lists was refused with SQLSTATE 42501 before anything else failed. Verdicts are collected
//! so that one run reports every attempt that got through; the test prints the number of
//! attempts (attempt × configuration × protocol) it ran.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "attacks/contrib.rs"]
mod contrib;
#[path = "attacks/escapes.rs"]
mod escapes;
#[path = "attacks/harness.rs"]
mod harness;
#[path = "attacks/lexer.rs"]
mod lexer;
#[path = "attacks/limits.rs"]
mod limits;
#[path = "attacks/protocol.rs"]
mod protocol;
#[path = "attacks/routes.rs"]
mod routes;
#[path = "attacks/rows.rs"]
mod rows;
#[path = "attacks/session.rs"]
mod session;
#[path = "attacks/settings.rs"]
mod settings;
#[path = "attacks/strict.rs"]
mod strict;
#[path = "attacks/strict_sessions.rs"]
mod strict_sessions;

use harness::{Env, Mode};
use session::{Protocol, Transcript};

/// What a configuration with the statement guard must answer to an attempt.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Refused by the guard: SQLSTATE 42501 under one of these rules, before any other error.
    Guard(&'static [&'static str]),
    /// Refused for naming the proxy's reserved injection statement: SQLSTATE 42501.
    Reserved,
    /// Not the guard's business and harmless: runs without any error (seeing tenant 1 only).
    Allowed,
    /// Not the guard's business: the server decides (often an error of its own).
    Server,
}

/// One attack written in SQL. In the steps, `{docs}` is the table under attack
/// (`documents`, or the strict table), `{ctx_args}` the arguments of the proxy's injection
/// statement with tenant 2's values, `{forged}` a signed context for tenant 2 under a wrong key.
#[derive(Debug)]
pub struct Attempt {
    /// What it tries, for the report.
    pub name: &'static str,
    /// Statements, one message each (a step may hold several statements: one Query).
    pub steps: &'static [&'static str],
    /// Run inside `BEGIN` … a read of `{docs}` … `COMMIT`, so that whatever the steps changed
    /// is still in effect when the table is read (the proxy sets the context again at the
    /// start of every transaction).
    pub block: bool,
    /// The guard's answer, in the configurations that have it.
    pub expect: Expect,
}

impl Attempt {
    /// An attempt run inside an explicit transaction block that ends with a read.
    pub const fn block(name: &'static str, steps: &'static [&'static str], expect: Expect) -> Self {
        Self { name, steps, block: true, expect }
    }

    /// An attempt run as is, each step its own transaction (or its own block).
    pub const fn alone(name: &'static str, steps: &'static [&'static str], expect: Expect) -> Self {
        Self { name, steps, block: false, expect }
    }
}

/// Every SQL attempt.
fn sql_attempts() -> impl Iterator<Item = &'static Attempt> {
    settings::ATTEMPTS
        .iter()
        .chain(escapes::ATTEMPTS)
        .chain(lexer::ATTEMPTS)
        .chain(rows::ATTEMPTS)
        .chain(routes::ATTEMPTS)
}

#[tokio::test]
async fn tenant_one_never_reaches_tenant_two() {
    harness::setup();
    let names: Vec<&str> = sql_attempts().chain(strict::ATTEMPTS).map(|a| a.name).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "attempt names must be unique");

    let (mut total, mut failures) = (0, Vec::new());
    // Sequential: the guard-off configuration can change role defaults in the shared cluster.
    for mode in Mode::ALL {
        let mut env = Env::start(mode).await;
        // What only strict mode answers runs where the guard is off.
        let strict_only = if mode.strict() { strict::ATTEMPTS } else { &[] };
        for attempt in sql_attempts().chain(strict_only) {
            for protocol in Protocol::ALL {
                run_sql(&mut env, attempt, protocol).await;
            }
        }
        protocol::run_all(&mut env).await;
        routes::run_all(&mut env).await;
        if mode.strict() {
            strict_sessions::run_all(&mut env).await;
        }
        println!("{}: {} attempts, {} failed", mode.name(), env.runs, env.failures.len());
        total += env.runs;
        failures.append(&mut env.failures);
        env.proxy.handle.shutdown();
    }
    println!("attack suite: {total} attempts");
    let report = failures.join("\n");
    assert!(failures.is_empty(), "{} of {total} attempts got through or misbehaved:\n{report}", failures.len());
}

/// The suite's control: with neither the guard nor strict mode, the same harness must see
/// these attempts get through, or a passing suite would prove nothing.
#[tokio::test]
async fn the_suite_sees_attacks_that_get_through() {
    // (The standard_conforming_strings attempt is no control any more: the proxy ends the
    // session when the server reports the setting off, guard or not.)
    const CONTROL: [&str; 5] = [
        "SET app.current_tenant",
        "set_config in WHERE",
        "DO block with dynamic EXECUTE",
        "query_to_xml running set_config",
        "SET ROLE admin_role",
    ];
    harness::setup();
    let mut env = Env::start(Mode::Open).await;
    for name in CONTROL {
        let attempt = sql_attempts().find(|a| a.name == name).expect("a control attempt");
        for protocol in Protocol::ALL {
            run_sql(&mut env, attempt, protocol).await;
            let seen = env.failures.iter().any(|f| f.contains(attempt.name) && f.contains("tenant-2 data"));
            assert!(seen, "the harness missed {} over {}: {:?}", attempt.name, protocol.name(), env.failures);
            env.failures.clear();
        }
    }
}

/// Runs one SQL attempt over `protocol` in a fresh tenant-1 session, then judges it.
async fn run_sql(env: &mut Env, attempt: &Attempt, protocol: Protocol) {
    let label = env.label(attempt.name, protocol.name());
    let mut steps: Vec<String> = attempt.steps.iter().map(|s| env.render(s)).collect();
    if attempt.block {
        steps.insert(0, "BEGIN".into());
        steps.push(env.render("SELECT title FROM {docs}"));
        steps.push("COMMIT".into());
    }
    let mut session = env.session(protocol).await;
    let mut reply = Transcript::default();
    for step in &steps {
        session.run(protocol, step, &mut reply).await;
        if reply.closed {
            break;
        }
    }
    if attempt.block {
        env.check_block_failed(&label, attempt.expect, &reply);
    }
    env.judge(&label, Some(attempt.expect), &reply, Some(&mut session)).await;
    session.close().await;
}
