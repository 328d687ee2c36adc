#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Differential test: a corpus of statements and protocol sequences (errors mid-
//! pipeline, portals with row limits, binary formats, COPY, notices, fast-path
//! calls, named and unnamed statements…) runs straight against PostgreSQL and
//! through rlsproxy, and the client must get the same backend messages, byte for
//! byte, in every mode:
//!
//! - `direct`: a raw connection to PostgreSQL as the proxy's own role (SCRAM), with
//!   `app.current_tenant` set to `1` first, as the proxy would;
//! - `session`: through the proxy, `pool.mode = "session"`, a token for tenant 1;
//! - `transaction`: through the proxy, `pool.mode = "transaction"`, with
//!   `max_prepared_statements = 2` so that named statements are evicted and re-prepared;
//! - `transaction-shared`: transaction mode with `pool.size = 1`, and between two steps
//!   of a case, whenever the case's client is idle, another client (tenant 2, other
//!   startup settings) runs a transaction on that same server connection, so every
//!   transaction of the case starts on a connection that another identity just used
//!   (reset, settings re-applied, named statements re-prepared).
//!
//! Every mode sends the same startup settings (application_name, DateStyle, TimeZone).
//! Each case runs on a fresh client connection and ends with a sentinel query
//! showing the settings and tenant in effect, so a desynchronised connection or a
//! lost setting shows up as a difference too.
//!
//! What is normalised, and why (nothing else is):
//! - NotificationResponse: the sender's backend pid, which is another backend's;
//! - the source location (`F`, `L`, `R`) of an ErrorResponse that the proxy synthesises
//!   for a renamed statement (transaction modes) or unparsable text (see [`same`]);
//! - in `transaction-shared` only: ParameterStatus messages are left out of the message
//!   sequence, because a connection change legitimately reports the settings again; the
//!   final value of every reported setting must still match.
//!
//! Run with `--nocapture` to see the table of cases and modes.

mod common;

#[path = "differential/corpus.rs"]
mod corpus;
#[path = "differential/edges.rs"]
mod edges;
#[path = "differential/recorder.rs"]
mod recorder;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::proxy::{self, TestProxy};
use common::raw::{self, RawClient};
use common::wire::Msgs;
use common::{Postgres, postgres};
use recorder::{Login, Record, Until};
use rlsproxy::config::PoolMode;

/// Startup settings sent by every client of the corpus, direct or through the proxy.
pub const SETTINGS: &[(&str, &str)] =
    &[("application_name", "differential"), ("DateStyle", "ISO, DMY"), ("TimeZone", "Europe/Paris")];

/// Startup parameters the proxy adds to every upstream connection (`upstream::connect`), with
/// the default `upstream.search_path`; a direct client sends them too, to compare alike.
const PINNED: &[(&str, &str)] = &[
    ("search_path", "public"),
    ("role", "none"),
    ("standard_conforming_strings", "on"),
    ("backslash_quote", "safe_encoding"),
    ("client_encoding", "UTF8"),
];

/// The query that ends every case.
const SENTINEL: &str = "SELECT current_setting('app.current_tenant') AS tenant, \
     current_setting('application_name') AS app, current_setting('DateStyle') AS datestyle, \
     current_setting('TimeZone') AS timezone, current_setting('search_path') AS search_path, \
     current_setting('transaction_isolation') AS isolation";

/// One write of frontend messages and where reading its replies stops.
pub struct Step {
    /// The messages, sent in one write.
    pub msgs: Msgs,
    /// When to stop reading.
    pub until: Until,
}

/// A named sequence of steps.
pub struct Case {
    /// Shown in the report.
    pub name: &'static str,
    /// Sent in order, each after the replies of the previous one.
    pub steps: Vec<Step>,
    /// Compared in session mode only, because a documented transaction-pooling rule makes
    /// it differ there (the reason is printed in the table).
    pub session_only: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Session,
    Transaction,
    TransactionShared,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Session => "session",
            Mode::Transaction => "transaction",
            Mode::TransactionShared => "transaction-shared",
        }
    }
}

/// What a client got during one case.
struct Outcome {
    records: Vec<Record>,
    /// Startup ParameterStatus values, updated by every ParameterStatus of the case.
    params: BTreeMap<String, String>,
    /// The case could not be run to its end (timeout, closed connection).
    error: Option<String>,
}

/// The other tenant's client of `transaction-shared`.
struct Noise {
    conn: RawClient,
    runs: usize,
}

impl Noise {
    async fn open(proxy: &TestProxy) -> Noise {
        let token = proxy.token("2");
        let login = recorder::login_token(proxy.addr, &token, &[("application_name", "noise")]).await;
        Noise { conn: login.conn, runs: 0 }
    }

    /// One transaction of tenant 2; it must see its own tenant.
    async fn run(&mut self) -> Result<(), String> {
        let sql = "SELECT current_setting('app.current_tenant'), current_setting('application_name')";
        self.conn.send_msgs(&Msgs::new().run(sql, &[])).await;
        let mut records = Vec::new();
        recorder::read_until(&mut self.conn, Until::Readies(1), &mut records).await?;
        self.runs += 1;
        let row = records.iter().find(|(tag, _)| *tag == b'D').ok_or_else(|| {
            format!("noise client got no row: {:?}", records.iter().map(recorder::describe).collect::<Vec<_>>())
        })?;
        let expected = data_row(&[b"2", b"noise"]);
        (row.1 == expected).then_some(()).ok_or_else(|| format!("noise client saw {}", recorder::describe(row)))
    }
}

fn data_row(values: &[&[u8]]) -> Vec<u8> {
    let mut body = i16::try_from(values.len()).unwrap().to_be_bytes().to_vec();
    for v in values {
        body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
        body.extend_from_slice(v);
    }
    body
}

/// Where a mode's clients connect.
enum Target<'a> {
    Direct,
    Proxy { proxy: &'a TestProxy, noise: Option<&'a mut Noise> },
}

impl Target<'_> {
    async fn login(&self) -> Login {
        match self {
            Target::Direct => {
                let pg = postgres();
                // What the proxy sends as startup parameters of its connections besides the client's.
                let settings = [SETTINGS, PINNED].concat();
                let mut login =
                    recorder::login_scram(pg.addr(), Postgres::PROXY_USER, Postgres::PROXY_PASSWORD, &settings).await;
                // The tenant the proxy's tokens carry, set as the proxy sets it; not recorded.
                let set = Msgs::new().query("SELECT set_config('app.current_tenant', '1', false)");
                login.conn.send_msgs(&set).await;
                let mut records = Vec::new();
                recorder::read_until(&mut login.conn, Until::Readies(1), &mut records).await.expect("set the tenant");
                assert!(records.iter().all(|(tag, _)| *tag != b'E'), "setting the tenant failed");
                login
            }
            Target::Proxy { proxy, .. } => recorder::login_token(proxy.addr, &proxy.token("1"), SETTINGS).await,
        }
    }

    /// Lets the other tenant use the shared connection, if this target has one and the
    /// case's client is not holding it (mid-transaction, or pinned by session state).
    async fn interfere(&mut self) -> Result<(), String> {
        let Target::Proxy { proxy, noise: Some(noise) } = self else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while proxy.pool.stats() != (1, 1) {
            if tokio::time::Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        noise.run().await
    }
}

async fn run_case(target: &mut Target<'_>, case: &Case) -> Outcome {
    let Login { mut conn, mut params } = target.login().await;
    let mut records = Vec::new();
    let mut error = None;
    let sentinel = Step { msgs: Msgs::new().query(SENTINEL), until: Until::Readies(1) };
    for (i, step) in case.steps.iter().chain(std::iter::once(&sentinel)).enumerate() {
        if let Err(e) = conn.try_send_raw(step.msgs.bytes()).await {
            error = Some(format!("step {i}: write failed: {e}"));
            break;
        }
        if matches!(step.until, Until::Nothing) {
            // Let the first part arrive on its own before the rest is written.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = recorder::read_until(&mut conn, step.until, &mut records).await {
            error = Some(format!("step {i}: {e}"));
            break;
        }
        let idle =
            matches!(step.until, Until::Readies(_)) && matches!(records.last(), Some((b'Z', body)) if body == b"I");
        if idle && let Err(e) = target.interfere().await {
            error = Some(format!("after step {i}: {e}"));
            break;
        }
    }
    let _ = conn.try_send_raw(Msgs::new().terminate().bytes()).await;
    for (tag, body) in &records {
        if *tag == b'S' {
            let (name, value) = common::reply::parameter_status(body);
            params.insert(name, value);
        }
    }
    Outcome { records, params, error }
}

/// The records compared for `mode` (see the module documentation).
fn normalise(records: &[Record], mode: Mode) -> Vec<Record> {
    records
        .iter()
        .filter(|(tag, _)| !(mode == Mode::TransactionShared && *tag == b'S'))
        .map(|(tag, body)| {
            let mut body = body.clone();
            if *tag == b'A' && body.len() >= 4 {
                // NotificationResponse: the notifying backend's pid.
                body[..4].fill(0);
            }
            (*tag, body)
        })
        .collect()
}

/// ErrorResponse fields naming the server's source location (file, line, routine).
const SOURCE_FIELDS: [u8; 3] = [b'F', b'L', b'R'];

/// Whether the proxy's record `got` stands for the server's record `want`.
///
/// One allowance, for errors the proxy answers itself: in transaction modes for a client
/// statement name the server cannot know (the proxy renames named prepared statements: a
/// Bind or Describe of a name that does not exist, a Parse of a name that does), in every
/// mode for text the guard cannot parse (never forwarded). Its ErrorResponse then cannot
/// carry the server's source location: when it has none of `F`, `L`, `R`, those are
/// dropped from the server's error; every other field (severity, SQLSTATE, message,
/// position…) must still be identical and in the same order.
fn same(want: &Record, got: &Record) -> bool {
    if want == got {
        return true;
    }
    let synthesised = want.0 == b'E' && got.0 == b'E';
    if !synthesised {
        return false;
    }
    let got_fields = raw::error_field_list(&got.1);
    if got_fields.iter().any(|(code, _)| SOURCE_FIELDS.contains(code)) {
        return false;
    }
    let want_fields: Vec<_> =
        raw::error_field_list(&want.1).into_iter().filter(|(code, _)| !SOURCE_FIELDS.contains(code)).collect();
    want_fields == got_fields
}

/// `None` when `got` equals `want`, else the first difference.
fn compare(want: &Outcome, got: &Outcome, mode: Mode) -> Option<String> {
    if let Some(e) = &want.error {
        return Some(format!("direct run failed: {e}"));
    }
    let (w, g) = (normalise(&want.records, mode), normalise(&got.records, mode));
    let mut report = String::new();
    let differs = |i: usize| match (w.get(i), g.get(i)) {
        (Some(a), Some(b)) => !same(a, b),
        _ => true,
    };
    if let Some(i) = (0..w.len().max(g.len())).find(|&i| differs(i)) {
        let show = |r: Option<&Record>| r.map_or("(nothing)".to_string(), recorder::describe);
        let _ =
            write!(report, "message #{i} differs:\n      direct: {}\n      proxy:  {}", show(w.get(i)), show(g.get(i)));
        if let Some(e) = &got.error {
            let _ = write!(report, "\n      ({e})");
        }
        return Some(report);
    }
    if let Some(e) = &got.error {
        return Some(format!("same messages, then: {e}"));
    }
    if want.params != got.params {
        let keys: Vec<&String> = want.params.keys().chain(got.params.keys()).collect();
        for key in keys {
            let (a, b) = (want.params.get(key), got.params.get(key));
            if a != b {
                let _ = write!(report, "parameter {key}: direct {a:?}, proxy {b:?}; ");
            }
        }
        return Some(report);
    }
    None
}

/// OIDs of the functions the fast-path cases call.
pub struct Oids {
    /// `upper(text)`.
    pub upper: u32,
    /// `int4div(int4, int4)`.
    pub int4div: u32,
    /// `length(text)`.
    pub length: u32,
}

async fn lookup_oids() -> Oids {
    let client = common::connect(&postgres().proxy_config(Postgres::APP_DB)).await;
    let row = client
        .query_one(
            "SELECT 'upper(text)'::regprocedure::oid, 'int4div(int4, int4)'::regprocedure::oid, \
             'length(text)'::regprocedure::oid",
            &[],
        )
        .await
        .expect("look up function OIDs");
    Oids { upper: row.get(0), int4div: row.get(1), length: row.get(2) }
}

async fn start_proxy(mode: PoolMode, size: usize, max_prepared_statements: usize, guard: bool) -> TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    cfg.pool.size = size;
    cfg.pool.max_prepared_statements = max_prepared_statements;
    // Relay fidelity, not policy: the main corpus uses DO blocks and RESET, which the
    // statement guard refuses (tested in tests/security).
    cfg.guard.enabled = guard;
    proxy::start(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_proxied_clients_get_the_same_messages() {
    let oids = lookup_oids().await;
    let cases = corpus::cases(&oids);
    assert!(cases.len() >= 25, "corpus too small");
    compare_modes(&cases, false).await;
}

/// Text the guard cannot parse is never forwarded; the client still gets PostgreSQL's own
/// syntax error (SQLSTATE, message, position), as drivers expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_the_guard_answers_match_postgresql() {
    compare_modes(&corpus::syntax_errors(), true).await;
}

/// Runs `cases` direct and through the proxy in every mode (`guard`: with the statement
/// guard on) and fails on any difference.
async fn compare_modes(cases: &[Case], guard: bool) {
    let session = start_proxy(PoolMode::Session, 4, 200, guard).await;
    // Two statements per server connection: the corpus's named statements are evicted
    // and prepared again all the time.
    let transaction = start_proxy(PoolMode::Transaction, 4, 2, guard).await;
    let shared = start_proxy(PoolMode::Transaction, 1, 200, guard).await;
    let mut noise = Noise::open(&shared).await;

    let modes = [Mode::Session, Mode::Transaction, Mode::TransactionShared];
    let mut table = String::new();
    let mut failures = String::new();
    let mut failed = 0;
    for case in cases {
        let direct = run_case(&mut Target::Direct, case).await;
        let _ = write!(table, "{:<52}", case.name);
        for mode in modes {
            if let (Some(reason), false) = (case.session_only, mode == Mode::Session) {
                let _ = write!(table, " {:<20}", format!("{}:n/a", mode.name()));
                let _ = writeln!(failures, "  ({} [{}] not compared: {reason})", case.name, mode.name());
                continue;
            }
            let mut target = match mode {
                Mode::Session => Target::Proxy { proxy: &session, noise: None },
                Mode::Transaction => Target::Proxy { proxy: &transaction, noise: None },
                _ => Target::Proxy { proxy: &shared, noise: Some(&mut noise) },
            };
            let got = run_case(&mut target, case).await;
            match compare(&direct, &got, mode) {
                None => {
                    let _ = write!(table, " {:<20}", format!("{}:pass", mode.name()));
                }
                Some(diff) => {
                    failed += 1;
                    let _ = write!(table, " {:<20}", format!("{}:FAIL", mode.name()));
                    let _ = writeln!(failures, "- {} [{}]: {diff}", case.name, mode.name());
                }
            }
        }
        table.push('\n');
    }
    let _ = writeln!(table, "(the other tenant ran {} transactions on the shared connection)", noise.runs);
    println!("{table}\n{failures}");
    assert_eq!(failed, 0, "{failed} case/mode combinations differ from direct:\n{failures}\n{table}");
}
