//! Red team of the masked admission record (commit 2227699): the recorded tenant and expiry
//! are XOR-masked with bytes 17–24 of the admission key's SHA-256. The statement guard OFF,
//! tenant 1 runs arbitrary SQL as app_proxy, in both pool modes, against a table under strict
//! policies (`rm_docs`). Each test asserts the secure outcome and prints what it saw
//! (`-- --nocapture`). Tests named in the report as findings fail on 2227699.

use std::sync::Once;
use std::time::{Duration, Instant};

use rlsproxy::config::PoolMode;
use rlsproxy::policy::strict;
use tokio_postgres::Client;

use crate::common::proxy::{self, TestProxy};
use crate::common::queries::try_rows;
use crate::common::{Postgres, postgres};
use crate::strict_suite::{self as suite, Outcome, Probe, now, one, owned, su_psql, wait_for};

const KID: &str = "rm_k";
const KEY_HEX: &str = "726d61736b726d61736b726d61736b726d61736b726d61736b726d61736b2121";
const T1: [&str; 2] = ["rm-1-a", "rm-1-b"];
const T2: [&str; 2] = ["rm-2-a", "rm-2-b"];
const PREFIX: &str = "rm";
const TITLES: &str = "SELECT title FROM public.rm_docs ORDER BY id";

/// The strict table, once per binary.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| suite::create_docs(Postgres::APP_DB, PREFIX, "app_proxy, admin_role", ""));
}

async fn strict_proxy(mode: PoolMode, size: usize) -> TestProxy {
    setup();
    proxy::start(suite::strict_config(KID, KEY_HEX, mode, size).await).await
}

async fn titles(c: &Client) -> Outcome {
    suite::titles(c, TITLES).await
}

/// Fails when `seen` holds any row that is not tenant 1's.
fn only_tenant1(label: &str, seen: &Outcome) {
    suite::only(label, seen, &T1);
}

// ---------------------------------------------------------------------------------------------
// (d) Lock requests queued on the admission sequences.
// ---------------------------------------------------------------------------------------------

/// A lock probe on the admission sequences' schema (`suite::lock_probe`); with `revoke`, the
/// superuser deletes a key while tenant 1's transaction is open: the revocation's result.
async fn probe(mode: PoolMode, cmd: &str, revoke: bool) -> (Probe, Option<Result<(), (String, String)>>) {
    let proxy = strict_proxy(mode, 6).await;
    // Held after the proxy put its key in (strict_without_guard takes it too).
    let _keys = if revoke { Some(proxy::KEYS.lock().await) } else { None };
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    if revoke {
        su.batch_execute(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('rm_compromised', decode(repeat('55', 32), 'hex')) \
             ON CONFLICT DO NOTHING",
        )
        .await
        .unwrap();
    }
    let revocation = async {
        if !revoke {
            return None;
        }
        su.batch_execute("SET lock_timeout = '3s'").await.unwrap();
        let r = su
            .batch_execute("DELETE FROM rlsproxy_private.keys WHERE kid = 'rm_compromised'")
            .await
            .map_err(|e| proxy::db_error(&e));
        su.batch_execute("RESET lock_timeout").await.unwrap();
        Some(r)
    };
    let watch = "c.relnamespace = 'rlsproxy'::regnamespace";
    let seen = suite::lock_probe(&proxy, TITLES, &T1, cmd, watch, revocation).await;
    let _ = su.batch_execute("DELETE FROM rlsproxy_private.keys WHERE kid = 'rm_compromised'").await;
    seen
}

/// FINDING (availability): PostgreSQL locks the relation a `CREATE RULE` (AccessExclusiveLock)
/// or `CREATE TRIGGER` (ShareRowExclusiveLock) names before it checks ownership or relkind.
/// The admission sequences are in schema rlsproxy, which PUBLIC may use; every strict
/// statement (tenant_id() → admission_marker() → pg_sequence_last_value(keys_epoch)) and every
/// admission takes RowExclusiveLock on them and keeps it to the end of its transaction. So a
/// tenant idle in a transaction plus a `CREATE RULE … TO rlsproxy.keys_epoch` on a second
/// connection stalls every strict statement of every tenant and the keys_changed trigger of a
/// key's DELETE (revocation), for as long as the first transaction stays open
/// (pool.idle_transaction_timeout_s defaults to 0: forever). The same as the earlier finding
/// on rlsproxy.keys, for the sequences.
#[tokio::test]
async fn rm_no_lock_request_queues_on_the_admission_sequences() {
    let mut stalled = Vec::new();
    for (mode, cmd, revoke) in [
        (PoolMode::Transaction, "CREATE RULE rm_r AS ON INSERT TO rlsproxy.keys_epoch DO INSTEAD NOTHING", true),
        (PoolMode::Session, "CREATE RULE rm_r AS ON INSERT TO rlsproxy.keys_epoch DO INSTEAD NOTHING", true),
        (
            PoolMode::Transaction,
            "CREATE TRIGGER rm_t AFTER INSERT ON rlsproxy.keys_epoch EXECUTE FUNCTION rlsproxy.keys_changed()",
            true,
        ),
        (PoolMode::Transaction, "CREATE RULE rm_r AS ON INSERT TO rlsproxy.admitted_hi DO INSTEAD NOTHING", false),
        (
            PoolMode::Transaction,
            "CREATE TRIGGER rm_t AFTER INSERT ON rlsproxy.admitted_tenant_id EXECUTE FUNCTION rlsproxy.keys_changed()",
            false,
        ),
    ] {
        let (p, revocation) = probe(mode, cmd, revoke).await;
        eprintln!("[{mode:?}] {cmd}: {p:?}");
        let victim_ok = matches!(&p.victim, Ok(Ok(rows)) if *rows == owned(&T2));
        let revoked_ok = revocation.as_ref().is_none_or(|r| r.is_ok());
        if p.queued || !victim_ok || !revoked_ok {
            stalled.push(format!(
                "{mode:?} {cmd}: queued {}, tenant 2 {:?}, revocation {:?}",
                p.queued, p.victim, revocation
            ));
        }
        // The secure outcome: refused before anything is locked.
        assert!(p.attacker.is_err(), "{cmd} succeeded");
    }
    assert!(stalled.is_empty(), "a queued lock request on the admission sequences stalls other tenants: {stalled:#?}");
}

/// Held: the other ways to name the sequences check privileges (or relkind) before they lock,
/// or take a lock that RowExclusiveLock does not wait for.
#[tokio::test]
async fn rm_other_commands_naming_the_sequences_queue_nothing() {
    let mut stalled = Vec::new();
    for cmd in [
        "COMMENT ON SEQUENCE rlsproxy.keys_epoch IS 'x'",
        "PREPARE rm_p AS DELETE FROM rlsproxy.keys_epoch",
        "PREPARE rm_p2 AS SELECT * FROM rlsproxy.admitted_hi FOR UPDATE",
        "BEGIN; LOCK TABLE rlsproxy.keys_epoch IN ACCESS EXCLUSIVE MODE; COMMIT",
        "ALTER SEQUENCE rlsproxy.keys_epoch RESTART",
        "ALTER TABLE rlsproxy.admitted_hi RENAME TO x",
        "VACUUM FULL rlsproxy.keys_epoch",
        "CLUSTER rlsproxy.keys_epoch",
        "TRUNCATE rlsproxy.admitted_hi",
        "CREATE POLICY rm_p ON rlsproxy.keys_epoch USING (true)",
        "CREATE INDEX ON rlsproxy.keys_epoch (last_value)",
        "GRANT UPDATE ON rlsproxy.keys_epoch TO app_proxy",
        "SECURITY LABEL ON SEQUENCE rlsproxy.keys_epoch IS 'x'",
        "DROP SEQUENCE rlsproxy.admitted_lo",
    ] {
        let (p, _) = probe(PoolMode::Transaction, cmd, false).await;
        eprintln!("{cmd}: {p:?}");
        let victim_ok = matches!(&p.victim, Ok(Ok(rows)) if *rows == owned(&T2));
        if p.queued || !victim_ok {
            stalled.push(format!("{cmd}: {p:?}"));
        }
    }
    assert!(stalled.is_empty(), "{stalled:#?}");
}

// ---------------------------------------------------------------------------------------------
// (e) The upgrade path.
// ---------------------------------------------------------------------------------------------

const BEFORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/strict_upgrade/0003_strict_mode_v2_unmasked.sql");
const AFTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");

/// A database of its own with the unmasked version of 0003, a strict table, and the test key.
async fn unmasked_install(db: &str) -> Client {
    suite::install(db, BEFORE, KID, KEY_HEX, PREFIX).await
}

async fn app_proxy(db: &str) -> Client {
    crate::common::connect(&postgres().proxy_config(db)).await
}

fn key() -> Vec<u8> {
    strict::key_from_hex(KEY_HEX).unwrap()
}

/// Held: a session admitted under the unmasked version keeps its tenant after the upgrade
/// (the migration moves the epoch: the old record is void, the value verifies the slow way,
/// and the next admission is masked).
#[tokio::test]
async fn rm_upgrade_voids_records_made_before() {
    let db = "rm_upgrade_before";
    let _su = unmasked_install(db).await;
    let _migrations = proxy::MIGRATIONS.lock().await;
    let v = strict::sign(KID, &key(), "1", None, now() + 3600);
    let s = app_proxy(db).await;
    s.query("SELECT set_config('rlsproxy.signed_context', $1, false), rlsproxy.admit($1, true)", &[&v]).await.unwrap();
    assert_eq!(one(&s, "SELECT rlsproxy.tenant_id()::text").await, Ok(Some("1".into())), "before");
    su_psql(db, &["-f", AFTER]);
    assert_eq!(one(&s, "SELECT rlsproxy.tenant_id()::text").await, Ok(Some("1".into())), "after, slow way");
    assert_eq!(titles(&s).await, Ok(owned(&T1)));
    s.query("SELECT rlsproxy.admit($1, true)", &[&v]).await.unwrap();
    assert_eq!(one(&s, "SELECT rlsproxy.tenant_id()::text").await, Ok(Some("1".into())), "after, admitted again");
}

/// FINDING (forged tenant, pseudorandom): the migration moves the keys' epoch *inside* its
/// transaction (nextval is not transactional), and it holds AccessExclusiveLock on keys_epoch
/// from its `ALTER SEQUENCE rlsproxy.keys_epoch OWNER` to its COMMIT. An admission that starts
/// meanwhile runs the old (unmasked) record_admission, waits in admission_marker() for
/// keys_epoch, then reads the *new* epoch and records its tenant and expiry UNMASKED under a
/// marker of the new epoch. The admission key is the same 16 bytes in both versions, so after
/// the COMMIT the new tenant_id() takes the fast path and "unmasks" the plain record:
/// it returns `1 XOR mask_lo` (a pseudorandom int4 that the client can compute from its own
/// value) whenever `exp XOR mask_hi` is in the future (~58 % of values), else NULL; until the
/// connection is admitted again (the proxy: 5 s). The migration's wait is easy to stretch: any
/// transaction that read one of the sequences (here `SELECT last_value FROM
/// rlsproxy.admitted_hi`, as a polling client does) holds it at its next ALTER SEQUENCE.
#[tokio::test]
async fn rm_upgrade_window_records_no_unmasked_admission() {
    let db = "rm_upgrade_window";
    let su = unmasked_install(db).await;
    let _migrations = proxy::MIGRATIONS.lock().await;
    let next_epoch: i64 = su
        .query_one("SELECT coalesce(pg_sequence_last_value('rlsproxy.keys_epoch'), 0) + 1", &[])
        .await
        .unwrap()
        .get(0);
    // A tenant-1 value whose plain record, "unmasked" under the next epoch, has an expiry in
    // the future (what the client can work out for itself: its value and the public epoch).
    let mut chosen = None;
    for exp in now() + 3600..now() + 3700 {
        let v = strict::sign(KID, &key(), "1", None, exp);
        let row = su
            .query_one(
                "SELECT (((($2::bigint << 32) | 1) # ('x' || encode(substr(sha256(convert_to($1, 'UTF8') || int8send($3)), 17, 8), 'hex'))::bit(64)::bigint) >> 32) & 4294967295,
                        ((((($2::bigint << 32) | 1) # ('x' || encode(substr(sha256(convert_to($1, 'UTF8') || int8send($3)), 17, 8), 'hex'))::bit(64)::bigint) << 32) >> 32)::int",
                &[&v, &(exp as i64), &next_epoch],
            )
            .await
            .unwrap();
        let (garbage_exp, garbage_tenant): (i64, i32) = (row.get(0), row.get(1));
        if garbage_exp > now() as i64 + 600 {
            chosen = Some((v, garbage_tenant));
            break;
        }
    }
    let (v, predicted) = chosen.expect("a value");
    // Let the pseudorandom tenant have a row, to show what the session then reads.
    su.execute("INSERT INTO public.rm_docs (tenant_id, title) VALUES ($1, 'rm-predicted')", &[&predicted])
        .await
        .unwrap();

    let s = app_proxy(db).await;
    s.query("SELECT set_config('rlsproxy.signed_context', $1, false), rlsproxy.admit($1, true)", &[&v]).await.unwrap();
    assert_eq!(one(&s, "SELECT rlsproxy.tenant_id()::text").await, Ok(Some("1".into())), "before");
    let s_pid: i32 = s.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    // A reader of the sequences in an open transaction (a polling client).
    let holder = app_proxy(db).await;
    holder.batch_execute("BEGIN; SELECT last_value FROM rlsproxy.admitted_hi").await.unwrap();
    let migration =
        tokio::task::spawn_blocking(move || postgres().superuser_psql(db).args(["-f", AFTER]).output().expect("psql"));
    // The migration now holds keys_epoch and waits for admitted_hi.
    let queued = "SELECT count(*) FROM pg_locks WHERE relation = 'rlsproxy.admitted_hi'::regclass \
                  AND mode = 'AccessExclusiveLock' AND NOT granted";
    assert!(wait_for(&su, queued, 10).await, "never: {queued}");
    // The connection is admitted again meanwhile (a proxy's adoption or refresh).
    let v2 = v.clone();
    let admit = tokio::spawn(async move {
        let r = s.query_one("SELECT rlsproxy.admit($1, true)", &[&v2]).await.map(|r| r.get::<_, bool>(0));
        (s, r.map_err(|e| proxy::db_error(&e)))
    });
    let blocked = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {s_pid} AND wait_event_type = 'Lock'");
    assert!(wait_for(&su, &blocked, 10).await, "never: {blocked}");
    holder.batch_execute("COMMIT").await.unwrap();
    let out = migration.await.unwrap();
    assert!(out.status.success(), "migration: {}", String::from_utf8_lossy(&out.stderr));
    let (s, admitted) = admit.await.unwrap();
    eprintln!("admission during the migration: {admitted:?}");

    let seen = try_rows(
        &s,
        "SELECT rlsproxy.tenant_id()::text, current_setting('rlsproxy.admitted'), \
                (SELECT pg_sequence_last_value(c.oid) FROM pg_class c \
                 WHERE c.relname = 'keys_epoch' AND c.relkind = 'S')::text, \
                ((rlsproxy.admitted_tenant() << 32) >> 32)::text AS recorded_tenant_in_clear",
    )
    .await;
    let rows = titles(&s).await;
    eprintln!(
        "after the upgrade: tenant_id, marker, epoch, record = {seen:?}; predicted tenant {predicted}; rows {rows:?}"
    );
    assert_eq!(
        seen.map(|r| r[0][0].clone()),
        Ok(Some("1".into())),
        "tenant_id() after an admission in the upgrade's window"
    );
    only_tenant1("rows after the upgrade window", &rows);
}

// ---------------------------------------------------------------------------------------------
// (c) Metadata: polling the shared values.
// ---------------------------------------------------------------------------------------------

/// Held: tenant 1 polls the three sequences' shared values (and pg_sequence_last_value) while
/// tenant 7's connections are admitted over and over; no sample shows tenant 7 or its expiry.
#[tokio::test]
async fn rm_polling_learns_no_tenant_or_expiry() {
    let proxy = strict_proxy(PoolMode::Session, 3).await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    let _ = titles(&attacker).await;
    let victim_ttl = 7777u64;
    let victim = proxy.connect(&proxy.token_with("7", None, Duration::from_secs(victim_ttl), &[])).await;
    let _ = titles(&victim).await;
    let exp = one(&victim, "SELECT rlsproxy.verified_context() ->> 'exp'").await.unwrap().unwrap();
    let exp: i64 = exp.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let admissions = tokio::spawn(async move {
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            victim
                .batch_execute("SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)")
                .await
                .unwrap();
            n += 1;
        }
        n
    });
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let r = try_rows(
            &attacker,
            // No role but their owner may name them: by OID, which the catalog shows.
            "SELECT pg_sequence_last_value(c.oid)::text FROM pg_class c \
             WHERE c.relname = 'admitted_tenant_id' AND c.relkind = 'S'",
        )
        .await
        .unwrap();
        for v in r[0].iter().flatten() {
            let v: i64 = v.parse().unwrap();
            if v != 0 {
                samples.push(v);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = admissions.await.unwrap();
    let leaks: Vec<_> =
        samples.iter().filter(|&&v| ((v << 32) >> 32) == 7 || ((v >> 32) & 0xffff_ffff) == exp).collect();
    let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
    eprintln!(
        "{n} admissions of tenant 7; {} non-blank samples ({} distinct: {distinct:?}); leaks {leaks:?}",
        samples.len(),
        distinct.len()
    );
    assert!(leaks.is_empty(), "polling showed tenant 7 or its expiry: {leaks:?}");
}

// ---------------------------------------------------------------------------------------------
// (b)/(e) The record and the new tenant_id().
// ---------------------------------------------------------------------------------------------

/// Held: the client's own objects and settings do not change what tenant_id() computes:
/// temp tables named like the types it uses (their row types shadow unqualified type names),
/// search_path with pg_temp first, settings that change text output of bytea, floats and dates,
/// plpgsql's extra checks. (standard_conforming_strings = off: the proxy ends the session.)
#[tokio::test]
async fn rm_tenant_id_ignores_client_objects_and_settings() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 1).await;
        let c = proxy.connect(&proxy.token("1")).await;
        let r = try_rows(
            &c,
            "CREATE TEMP TABLE bytea (x int); CREATE TEMP TABLE int8 (x int); CREATE TEMP TABLE bit (x int); \
             CREATE TEMP TABLE int4 (x int); CREATE TEMP TABLE text (x int); \
             CREATE FUNCTION pg_temp.substr(pg_catalog.bytea, int, int) RETURNS pg_catalog.bytea LANGUAGE sql AS 'SELECT ''\\x00''::pg_catalog.bytea'; \
             CREATE FUNCTION pg_temp.rm_ne(pg_catalog.bytea, pg_catalog.bytea) RETURNS boolean LANGUAGE sql AS 'SELECT false'; \
             CREATE OPERATOR pg_temp.<> (LEFTARG = pg_catalog.bytea, RIGHTARG = pg_catalog.bytea, FUNCTION = pg_temp.rm_ne); \
             CREATE FUNCTION pg_temp.rm_x(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 2::bigint | (4294967295::bigint << 32)'; \
             CREATE OPERATOR pg_temp.# (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pg_temp.rm_x)",
        )
        .await;
        eprintln!("[{mode:?}] shadow objects: {r:?}");
        for set in [
            "SET search_path = pg_temp, pg_catalog, public",
            "SET bytea_output = escape",
            "SET extra_float_digits = -15",
            "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Pacific/Kiritimati'",
            "SET plpgsql.extra_errors = 'all'",
            "SET plpgsql.variable_conflict = use_variable",
            "SET client_encoding = 'LATIN1'",
        ] {
            let r = try_rows(&c, set).await;
            let v = one(&c, "SELECT concat_ws(',', rlsproxy.tenant_id(), rlsproxy.tenant())").await;
            let seen = titles(&c).await;
            eprintln!("[{mode:?}] {set} -> {r:?}; accessors {v:?}");
            only_tenant1(&format!("{mode:?} {set}"), &seen);
            assert_eq!(v, Ok(Some("1,1".into())), "{mode:?} {set}");
            assert_eq!(seen, Ok(owned(&T1)), "{mode:?} {set}");
        }
    }
}

/// Held: interrupted admissions of a second own value (statement_timeout of 1 ms inside a
/// block that is then rolled back, which restores the marker but not the sequences), DISCARD
/// SEQUENCES, REPEATABLE READ and read-only admissions, markers set by hand: tenant_id() is
/// 1, NULL or an error for either value, never another tenant, and tenant 2's rows are never
/// read, updated or deleted.
#[tokio::test]
async fn rm_interrupted_and_mixed_records_give_no_other_tenant() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let proxy = strict_proxy(mode, 2).await;
        let a = proxy.connect(&proxy.token("1")).await;
        let other = proxy.connect(&proxy.token_with("1", None, Duration::from_secs(5000), &[])).await;
        let va = one(&a, "SELECT current_setting('rlsproxy.signed_context')").await.unwrap().unwrap();
        let vb = one(&other, "SELECT current_setting('rlsproxy.signed_context')").await.unwrap().unwrap();
        drop(other);
        let mut odd = Vec::new();
        let mut interrupted = 0;
        for i in 0..60 {
            let (first, second) = if i % 2 == 0 { (&va, &vb) } else { (&vb, &va) };
            let timeout = ["1ms", "2ms", "3ms"][i % 3];
            let tail = match i % 5 {
                0 => "ROLLBACK",
                1 => "COMMIT",
                2 => "ROLLBACK; DISCARD SEQUENCES",
                3 => "ROLLBACK; SELECT pg_catalog.set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false)",
                _ => {
                    "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true); COMMIT"
                }
            };
            let sql = format!(
                "SELECT pg_catalog.set_config('rlsproxy.signed_context', '{first}', false), rlsproxy.admit('{first}', true); \
                 BEGIN; SET LOCAL statement_timeout = '{timeout}'; \
                 SELECT pg_catalog.set_config('rlsproxy.signed_context', '{second}', false), rlsproxy.admit('{second}', true)"
            );
            let r = try_rows(&a, &sql).await;
            if r.is_err() {
                interrupted += 1;
            }
            let _ = try_rows(&a, tail).await;
            for v in [&va, &vb] {
                let got = try_rows(
                    &a,
                    &format!(
                        "SELECT pg_catalog.set_config('rlsproxy.signed_context', '{v}', false); \
                         SELECT pg_catalog.set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false); \
                         SELECT rlsproxy.tenant_id()::text"
                    ),
                )
                .await;
                match got {
                    Ok(rows) if matches!(rows.last().map(|r| r[0].as_deref()), Some(Some("1")) | Some(None)) => {}
                    Err(_) => {}
                    other => odd.push(format!("{i} {tail}: {other:?}")),
                }
                let seen = try_rows(
                    &a,
                    &format!(
                        "SELECT pg_catalog.set_config('rlsproxy.signed_context', '{v}', false); \
                         SELECT pg_catalog.set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false); \
                         UPDATE public.rm_docs SET title = title WHERE tenant_id <> 1 RETURNING title"
                    ),
                )
                .await;
                if let Ok(rows) = &seen {
                    let foreign: Vec<_> = rows.iter().skip(2).collect();
                    assert!(foreign.is_empty(), "{mode:?} {i}: updated {foreign:?}");
                }
            }
            let _ = try_rows(&a, "DISCARD SEQUENCES").await;
        }
        eprintln!("[{mode:?}] {interrupted} of 60 admissions interrupted; odd {odd:?}");
        assert!(odd.is_empty(), "{mode:?}: {odd:#?}");
        only_tenant1(&format!("{mode:?} after"), &titles(&a).await);
        let ins =
            try_rows(&a, "INSERT INTO public.rm_docs (tenant_id, title) VALUES (2, 'rm-injected') RETURNING title")
                .await;
        assert_eq!(ins.map_err(|e| e.0), Err("42501".into()), "{mode:?}: insert for tenant 2");
    }
}

/// Held: SQL prepared statements (generic plans, prepared where the proxy's lexical check does
/// not see them) and WITH HOLD cursors kept on a server connection while tenant 2 uses it
/// (transaction pooling, one connection): executed again by tenant 1 they read tenant 1's
/// rows; parallel plans of them too.
#[tokio::test]
async fn rm_prepared_statements_and_cursors_across_tenants() {
    let proxy = strict_proxy(PoolMode::Transaction, 1).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let victim = proxy.connect(&proxy.token("2")).await;
    let r = try_rows(
        &a,
        "DO $d$ BEGIN
            EXECUTE format('SET %s = %L', 'plan_cache_mode', 'force_generic_plan');
            EXECUTE 'PRE' || 'PARE rm_p AS SELECT title FROM public.rm_docs ORDER BY id';
            EXECUTE 'PRE' || 'PARE rm_t AS SELECT rlsproxy.tenant_id()::text';
         END $d$",
    )
    .await;
    eprintln!("hidden prepare: {r:?}");
    for _ in 0..6 {
        let _ = try_rows(&a, "EXECUTE rm_p").await;
    }
    let victim_sees = titles(&victim).await;
    let victim_runs = try_rows(&victim, "EXECUTE rm_p").await;
    eprintln!("tenant 2: {victim_sees:?}; executes tenant 1's statement: {victim_runs:?}");
    assert_eq!(victim_sees, Ok(owned(&T2)));
    for sql in ["EXECUTE rm_p", "EXECUTE rm_t"] {
        let seen: Outcome =
            try_rows(&a, sql).await.map(|rows| rows.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect());
        eprintln!("{sql} -> {seen:?}");
        if sql == "EXECUTE rm_t" {
            assert!(seen.as_ref().map_or(true, |r| r.iter().all(|t| t == "1")), "{seen:?}");
        } else {
            only_tenant1(sql, &seen);
        }
    }
    let seen: Outcome = try_rows(
        &a,
        "SET force_parallel_mode = on; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; EXECUTE rm_p",
    )
    .await
    .map(|rows| rows.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect());
    only_tenant1("parallel generic plan", &seen);
    // A WITH HOLD cursor pins the connection to tenant 1 until it is closed.
    let proxy = strict_proxy(PoolMode::Transaction, 2).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let victim = proxy.connect(&proxy.token("2")).await;
    let r = try_rows(&a, "DECLARE rm_c CURSOR WITH HOLD FOR SELECT title FROM public.rm_docs ORDER BY id").await;
    eprintln!("cursor: {r:?}");
    assert_eq!(titles(&victim).await, Ok(owned(&T2)));
    let seen: Outcome = try_rows(&a, "FETCH ALL FROM rm_c")
        .await
        .map(|rows| rows.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect());
    only_tenant1("FETCH ALL FROM rm_c", &seen);
    assert_eq!(seen, Ok(owned(&T1)));
}
