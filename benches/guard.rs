//! The statement guard's cost per statement: a first check (parse with libpg_query and walk
//! the tree) and a cached check (the verdict looked up by text), against the baseline of
//! doing nothing but copying the text, measured in one run.
//!
//! Run: `cargo bench --bench guard`

use std::hint::black_box;
use std::time::Instant;

use rlsproxy::config::Config;
use rlsproxy::policy::guard::Guard;

const STATEMENTS: &[&str] = &[
    "SELECT id, title FROM documents WHERE tenant_id = $1 ORDER BY id LIMIT 50",
    "INSERT INTO documents (tenant_id, title, body) VALUES ($1, $2, $3) RETURNING id",
    "UPDATE documents SET title = $1 WHERE id = $2",
    "SELECT d.id, u.name FROM documents d JOIN users u ON u.tenant_id = d.tenant_id WHERE d.id = ANY($1)",
    "WITH recent AS (SELECT * FROM documents ORDER BY id DESC LIMIT 10) SELECT count(*) FROM recent",
];

fn per_statement(label: &str, runs: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..runs {
        f(i);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / runs as f64;
    println!("{label:<44} {micros:>9.3} µs/statement");
    micros
}

fn main() {
    let guard = Guard::from_config(&Config::default());
    // Below the verdict cache's capacity, so the second pass finds every text cached.
    let runs = 5_000;
    // Distinct texts (a changing literal) miss the cache: every check parses.
    let distinct: Vec<String> = (0..runs).map(|i| format!("{} /* {i} */", STATEMENTS[i % STATEMENTS.len()])).collect();
    let baseline = per_statement("baseline (copy the text)", runs, |i| {
        black_box(distinct[i].as_bytes().to_vec());
    });
    let first = per_statement("first check (parse + walk)", runs, |i| {
        black_box(guard.check_sql(distinct[i].as_bytes(), None, false).is_ok());
    });
    let cached = per_statement("cached check (same text again)", runs, |i| {
        black_box(guard.check_sql(distinct[i].as_bytes(), None, false).is_ok());
    });
    println!("first/baseline {:.1}x, cached/baseline {:.1}x", first / baseline, cached / baseline);
}
