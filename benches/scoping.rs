//! The per-tenant rewrites' cost (advisory lock keys, LISTEN/NOTIFY channels) on a long text
//! they must parse (a 1 MB multi-row INSERT with escape strings), against the baseline of
//! parsing it, measured in one run; also the process's peak memory after each step.
//!
//! Run: `cargo bench --bench scoping`

use std::hint::black_box;
use std::time::Instant;

use rlsproxy::policy::advisory::{LockScope, scope_lock_keys};
use rlsproxy::policy::notify::{ChannelScope, scope_channels};

/// Peak resident memory so far (Linux), for the report only.
fn peak() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

fn timed(label: &str, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("{label:<42} {ms:>9.1} ms   peak {:>9} kB", peak());
    ms
}

fn main() {
    let mut sql = String::from("INSERT INTO documents (tenant_id, title, body) VALUES ");
    for i in 0.. {
        if sql.len() >= 1_000_000 {
            break;
        }
        sql.push_str(&format!("(1, 't{i}', E'a\\\\b {i}'), "));
    }
    sql.push_str("(1, 'last', 'row')");
    println!("text: {} bytes", sql.len());
    // Warm-up, not measured: the first parse pays for loading the parser.
    black_box(pg_query::parse("SELECT 1", 0).is_ok());
    let parse = timed("baseline (parse)", || {
        black_box(pg_query::parse(&sql, 0).is_ok());
    });
    let advisory = timed("advisory lock keys (tokens, parse, walk)", || {
        black_box(scope_lock_keys(sql.as_bytes(), &LockScope::for_tenant("1")).is_ok());
    });
    let channels = timed("channels (tokens, parse, walk)", || {
        black_box(scope_channels(sql.as_bytes(), &ChannelScope::for_tenant("1"), false).is_ok());
    });
    println!("advisory/parse {:.2}x, channels/parse {:.2}x", advisory / parse, channels / parse);
}
