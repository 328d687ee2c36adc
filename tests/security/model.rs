//! Model-based test of reply routing: two clients of two tenants send random pipelines
//! (simple and extended queries, errors, Flush, COPY IN with good and bad data, with and
//! without CopyDone) over one upstream connection in transaction pooling. Every query
//! selects a token unique to its client, so each client checks that every reply it gets
//! answers its own request, in order, with one ReadyForQuery per Query and Sync.
//!
//! Seeded and reproducible: `RLSPROXY_MODEL_SEED=<n> cargo test --test security model`
//! replays one seed; a failure names its seed.

use crate::common::raw::{self, RawClient};
use crate::common::{postgres, proxy};
use crate::desync::one_connection;
use crate::{Msgs, raw_login};

const SEEDS: [u64; 3] = [1, 2, 3];
const BATCHES: usize = 25;
const COPY: &str = "COPY sec_model_sink FROM STDIN";

/// One expected reply.
#[derive(Debug, Clone, PartialEq)]
enum Exp {
    Tag(u8),
    /// A DataRow whose first column is this.
    Row(String),
    /// An ErrorResponse with this SQLSTATE.
    Error(&'static str),
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Parse (unnamed), Bind, Describe portal, Execute.
fn extended(sql: &str, describe: bool) -> Msgs {
    let bound = Msgs::new().parse("", sql, &[]).bind_text("", "", &[]);
    let described = if describe { bound.describe(b'P', "") } else { bound };
    described.execute("", 0)
}

fn tags(list: &[u8]) -> Vec<Exp> {
    list.iter().map(|&t| Exp::Tag(t)).collect()
}

/// One random operation: the messages to send, the replies expected, and whether the client
/// must wait for them before sending anything else.
fn operation(rng: &mut Rng, tenant: &str, token: &str) -> (Msgs, Vec<Exp>, bool) {
    let row = || Exp::Row(token.to_string());
    let select = format!("SELECT '{token}'");
    let q = |sql: &str| Msgs::new().query(sql);
    let copy_data = |good: bool| Msgs::new().copy_data(if good { b"1\n" } else { b"abc\n" });
    let (msgs, expected, wait) = match rng.below(12) {
        0 => (q(&select), vec![Exp::Tag(b'T'), row(), Exp::Tag(b'C')], false),
        1 => (
            q("SELECT current_setting('app.current_tenant')"),
            vec![Exp::Tag(b'T'), Exp::Row(tenant.into()), Exp::Tag(b'C')],
            false,
        ),
        2 => (q("SELECT 1/0"), vec![Exp::Error("22012")], false),
        3 | 4 => {
            let b = extended(&select, true);
            let b = if rng.below(2) == 0 { b.flush() } else { b };
            (b.sync(), [tags(b"12T"), vec![row(), Exp::Tag(b'C')]].concat(), false)
        }
        5 => {
            // Volatile, so that the error comes from the Execute, not from planning at Bind.
            let b = extended("SELECT 1 / (random() * 0)::int", true).sync();
            (b, [tags(b"12T"), vec![Exp::Error("22012")]].concat(), false)
        }
        6 | 7 => {
            let good = rng.below(2) == 0;
            let b = q(COPY).then(&copy_data(good)).copy_done();
            let end = if good { Exp::Tag(b'C') } else { Exp::Error("22P02") };
            (b, vec![Exp::Tag(b'G'), end], false)
        }
        8 | 9 => {
            // tokio-postgres: Bind/Execute/Sync before the data, then CopyDone and Sync.
            let good = rng.below(2) == 0;
            let b = extended(COPY, false).sync().then(&copy_data(good)).copy_done().sync();
            let end = if good { Exp::Tag(b'C') } else { Exp::Error("22P02") };
            (b, [tags(b"12G"), vec![end]].concat(), false)
        }
        10 => {
            // libpq after a failed COPY: no CopyDone; it waits for the error first.
            (q(COPY).copy_data(b"abc\n"), vec![Exp::Tag(b'G'), Exp::Error("22P02")], true)
        }
        _ => (
            q(&format!("BEGIN; {select}; COMMIT")),
            vec![Exp::Tag(b'C'), Exp::Tag(b'T'), row(), Exp::Tag(b'C'), Exp::Tag(b'C')],
            false,
        ),
    };
    (msgs, [expected, vec![Exp::Tag(b'Z')]].concat(), wait)
}

/// The next reply that is not asynchronous (notices, parameter reports).
async fn next_reply(c: &mut RawClient) -> (u8, Vec<u8>) {
    loop {
        let msg = c.read_message().await;
        if !matches!(msg.0, b'N' | b'S') {
            return msg;
        }
    }
}

fn matches(exp: &Exp, (tag, body): &(u8, Vec<u8>)) -> bool {
    match exp {
        Exp::Tag(t) => tag == t,
        Exp::Row(value) => *tag == b'D' && crate::first_column(&[(*tag, body.clone())]) == [value.clone()],
        Exp::Error(code) => *tag == b'E' && raw::error_fields(body).get(&'C').map(String::as_str) == Some(code),
    }
}

async fn run_client(mut c: RawClient, tenant: &str, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut n = 0;
    for batch in 0..BATCHES {
        let mut msgs = Msgs::new();
        let mut expected = Vec::new();
        for _ in 0..=rng.below(4) {
            n += 1;
            let (m, e, wait) = operation(&mut rng, tenant, &format!("t{tenant}-{n}"));
            msgs = msgs.then(&m);
            expected.extend(e);
            if wait {
                break;
            }
        }
        c.send_msgs(&msgs).await;
        for (i, exp) in expected.iter().enumerate() {
            let got = next_reply(&mut c).await;
            assert!(
                matches(exp, &got),
                "seed {seed}, tenant {tenant}, batch {batch}, reply {i}: expected {exp:?}, got '{}' {:?} \
                 (replay with RLSPROXY_MODEL_SEED={seed})",
                got.0 as char,
                String::from_utf8_lossy(&got.1)
            );
        }
    }
}

#[tokio::test]
async fn random_pipelines_of_two_tenants_get_only_their_own_replies() {
    let su = postgres().superuser_client("app").await;
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS sec_model_sink (a int); GRANT INSERT, SELECT ON sec_model_sink TO PUBLIC",
    )
    .await
    .unwrap();
    let seeds: Vec<u64> = match std::env::var("RLSPROXY_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RLSPROXY_MODEL_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        let proxy = proxy::start(one_connection()).await;
        let (a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
        let (b, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;
        tokio::join!(run_client(a, "1", 2 * seed), run_client(b, "2", 2 * seed + 1));
    }
}
