//! Red team of the admission sequences' move to rlsproxy_private (commit 931ce45): the four
//! sequences are reached only by OID, through rlsproxy.admitted_hi/lo/tenant() (standard-SQL
//! bodies bound when created), and the admission key carries a format tag. The statement guard
//! OFF, tenant 1 runs arbitrary SQL as app_proxy. Each test asserts the secure outcome and prints
//! what it saw (`-- --nocapture`). Tests named in the report as findings fail on 931ce45.

use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use rlsproxy::config::PoolMode;
use rlsproxy::policy::strict;
use tokio_postgres::Client;

use crate::common::proxy::{self, TestProxy};
use crate::common::queries::try_rows;
use crate::common::{Postgres, postgres};
use crate::strict_suite::{self as suite, Outcome, now, one, owned, su_psql, wait_for};

const KID: &str = "rs_k";
const KEY_HEX: &str = "7273656d6f76657273656d6f76657273656d6f76657273656d6f766572212121";
const T1: [&str; 2] = ["rs-1-a", "rs-1-b"];
const T2: [&str; 2] = ["rs-2-a", "rs-2-b"];
const PREFIX: &str = "rs";
const TITLES: &str = "SELECT title FROM public.rs_docs ORDER BY id";
const AFTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");

/// The strict table in `app`, once per binary.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| suite::create_docs(Postgres::APP_DB, PREFIX, "app_proxy", ""));
}

async fn strict_proxy(mode: PoolMode, size: usize) -> TestProxy {
    setup();
    proxy::start(suite::strict_config(KID, KEY_HEX, mode, size).await).await
}

async fn titles(c: &Client) -> Outcome {
    suite::titles(c, TITLES).await
}

fn key() -> Vec<u8> {
    strict::key_from_hex(KEY_HEX).unwrap()
}

/// A database of its own with the current 0003, the strict table and the test key.
async fn install(db: &str) -> Client {
    suite::install(db, AFTER, KID, KEY_HEX, PREFIX).await
}

/// An app_proxy session of `db` doing what the proxy does when a connection takes tenant's
/// context: set the signed value, admit it (forced).
async fn tenant_session(db: &str, tenant: &str) -> (Client, String) {
    let c = crate::common::connect(&postgres().proxy_config(db)).await;
    let v = strict::sign(KID, &key(), tenant, None, now() + 3600);
    c.query("SELECT set_config('rlsproxy.signed_context', $1, false), rlsproxy.admit($1, true)", &[&v]).await.unwrap();
    (c, v)
}

// ---------------------------------------------------------------------------------------------
// (f) Re-running the migration on a live system.
// ---------------------------------------------------------------------------------------------

/// FINDING (availability, any tenant can make an upgrade an outage): the upgrade steps say to
/// apply 0003 again before starting every newer rlsproxy ("re-runnable"), on the live database. On a
/// re-run that has nothing to change, the file still takes AccessExclusiveLock on
/// rlsproxy_private.keys (`ALTER TABLE … ADD COLUMN IF NOT EXISTS`, `OWNER TO`) and on every
/// admission sequence (`ALTER SEQUENCE … OWNER TO`), in one transaction, with no lock_timeout.
/// Every transaction of the proxy holds AccessShareLock on keys (its admission verifies) and
/// RowExclusiveLock on the sequences (every strict statement) to its end, so one transaction
/// left open (a tenant's `BEGIN` and nothing more; `pool.idle_transaction_timeout_s` is 0 by
/// default) makes the migration queue behind it, and every other tenant's admission and strict
/// statement then queues behind the migration: all tenants stall for as long as that
/// transaction stays open. Measured (holder open ~4-7 s): tenant 2's new connection (its
/// admission) and, when the holder only ran an admitted statement, tenant 2's admitted
/// connection too, waited the whole time (3 s timeouts); the migration finished only when the
/// holder ended. Lock order is inverted besides (the migration: keys, then the sequences; an
/// admission: keys_epoch, then keys), so an admission that starts while the migration waits
/// deadlocks with it: in the first case the migration itself was aborted (40P01 at its
/// `ALTER SEQUENCE … OWNER`), in a manual run the tenant's transaction was.
#[tokio::test]
async fn rs_migration_rerun_on_a_live_system_stalls_no_tenant() {
    let db = "rs_rerun";
    let su = install(db).await;
    let _m = proxy::MIGRATIONS.lock().await;
    let mut failures = Vec::new();
    for holder_kind in ["admits in its open transaction", "runs one admitted statement in its open transaction"] {
        // Tenant 2, admitted before (fast path later).
        let (warm, _) = tenant_session(db, "2").await;
        assert_eq!(titles(&warm).await, Ok(owned(&T2)));
        // Tenant 1 (the attacker, or any slow client) leaves a transaction open.
        let (holder, v1) = tenant_session(db, "1").await;
        holder.batch_execute("BEGIN").await.unwrap();
        if holder_kind.starts_with("admits") {
            holder.query("SELECT rlsproxy.admit($1, true)", &[&v1]).await.unwrap();
        }
        assert_eq!(titles(&holder).await, Ok(owned(&T1)));

        let started = Instant::now();
        let migration = tokio::task::spawn_blocking(move || {
            let out = postgres().superuser_psql(db).args(["-f", AFTER]).output().expect("psql");
            (out, started.elapsed())
        });
        let queued =
            wait_for(&su, "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted", 10).await;
        // A new connection of tenant 2 (the proxy admits forced when a connection takes a
        // context) and the admitted one, each given 3 s.
        let fresh = tokio::time::timeout(Duration::from_secs(3), async {
            let (c, _) = tenant_session(db, "2").await;
            titles(&c).await
        })
        .await
        .map_err(|_| "timed out after 3 s");
        let warm_seen =
            tokio::time::timeout(Duration::from_secs(3), titles(&warm)).await.map_err(|_| "timed out after 3 s");
        let waiting: Vec<String> = su
            .query(
                "SELECT l.relation::regclass::text || ' ' || l.mode FROM pg_locks l \
                 WHERE l.locktype = 'relation' AND NOT l.granted ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held_for = started.elapsed();
        holder.batch_execute("ROLLBACK").await.unwrap();
        let (out, took) = migration.await.unwrap();
        eprintln!(
            "[{holder_kind}] migration queued: {queued}, waiting locks {waiting:?}; tenant 2 new connection: {fresh:?}; \
             tenant 2 admitted connection: {warm_seen:?}; the migration took {took:?} (holder kept open {held_for:?}), \
             ok {}: {}",
            out.status.success(),
            String::from_utf8_lossy(&out.stderr)
        );
        if fresh != Ok(Ok(owned(&T2))) || warm_seen != Ok(Ok(owned(&T2))) || !out.status.success() {
            failures.push(format!(
                "holder {holder_kind}: tenant 2 new {fresh:?}, admitted {warm_seen:?}; migration waiting on {waiting:?}; \
                 migration ok {}: {}",
                out.status.success(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "re-running 0003 with one transaction open stalls every tenant: {failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// (d) Lock requests on the sequences and the keys by OID, and on catalogs.
// ---------------------------------------------------------------------------------------------

/// The private relations by OID, found through the catalogs (the proxy refuses the schema's name
/// in SQL text, a string literal splits it).
const PRIVATE: &str = "(SELECT array_agg(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                        WHERE n.nspname = 'rlsproxy' || '_private')";

/// Held: every OID-taking function a client may call, given the OID of each private relation
/// (the four sequences, keys, keys_pkey), either checks privileges before it locks or takes a
/// lock that neither RowExclusiveLock (strict statements, on the sequences) nor AccessShareLock
/// (admissions, on keys) waits for: nothing queues, tenant 2 is served.
#[tokio::test]
async fn rs_oid_taking_functions_queue_no_lock_on_private_relations() {
    let calls = [
        "brin_summarize_new_values(o::regclass)",
        "brin_summarize_range(o::regclass, 0)",
        "brin_desummarize_range(o::regclass, 0)",
        "gin_clean_pending_list(o::regclass)",
        "pg_relation_size(o::regclass)",
        "pg_table_size(o::regclass)",
        "pg_indexes_size(o::regclass)",
        "pg_total_relation_size(o::regclass)",
        "pg_relation_is_updatable(o::regclass, true)",
        "pg_column_is_updatable(o::regclass, 1::int2, true)",
        "pg_get_replica_identity_index(o::regclass)",
        "pg_sequence_last_value(o::regclass)",
        "pg_sequence_parameters(o)",
        "currval(o::regclass)",
        "nextval(o::regclass)",
        "setval(o::regclass, 1)",
        "setval(o::regclass, 1, false)",
        "pg_partition_tree(o::regclass)",
        "pg_partition_root(o::regclass)",
        "pg_get_indexdef(o)",
        "pg_get_viewdef(o)",
        "pg_stat_reset_single_table_counters(o)",
    ];
    let mut body = String::new();
    for call in calls {
        body += &format!("BEGIN PERFORM {call}; EXCEPTION WHEN OTHERS THEN NULL; END; ");
    }
    let cmd = format!("DO $rs$ DECLARE o oid; BEGIN FOREACH o IN ARRAY {PRIVATE} LOOP {body} END LOOP; END $rs$");
    let mut stalled = Vec::new();
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 6).await;
        let watch = "c.relnamespace = 'rlsproxy_private'::regnamespace";
        let (p, ()) = suite::lock_probe(&proxy, TITLES, &T1, &cmd, watch, async {}).await;
        eprintln!("[{mode:?}] {p:?}");
        // The block ran (each call caught its own error): the calls were made, not refused.
        assert_eq!(p.attacker, Ok(()), "[{mode:?}]");
        if p.queued || p.victim != Ok(Ok(owned(&T2))) {
            stalled.push(format!("{mode:?}: {p:?}"));
        }
    }
    assert!(stalled.is_empty(), "{stalled:#?}");
}

// ---------------------------------------------------------------------------------------------
// (e) The new helpers, shadowing.
// ---------------------------------------------------------------------------------------------

/// Held: tenant 1 builds a fake admission record for its own value that says tenant 2 (its own
/// admission key, tenant 2 under the mask it can compute) in temporary sequences named like the
/// private ones, shadows the helpers with pg_temp functions returning it, and puts pg_temp first
/// in search_path: tenant_id() still reads the private sequences (bound by OID) and says 1.
#[tokio::test]
async fn rs_shadowed_helpers_and_sequences_are_not_read() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        let setup = "BEGIN;
            CREATE TEMP TABLE rs_fake AS
              SELECT ('x' || encode(substr(k, 1, 8), 'hex'))::bit(64)::bigint AS hi,
                     ('x' || encode(substr(k, 9, 8), 'hex'))::bit(64)::bigint AS lo,
                     ((((extract(epoch FROM now())::bigint + 3000) << 32) | 2)
                      # ('x' || encode(substr(k, 17, 8), 'hex'))::bit(64)::bigint) AS t
              FROM (SELECT rlsproxy.admission_key(current_setting('rlsproxy.signed_context'),
                           split_part(rlsproxy.admission_marker(), '.', 2)::bigint) AS k) AS s;
            CREATE TEMP SEQUENCE admitted_hi MINVALUE -9223372036854775808;
            CREATE TEMP SEQUENCE admitted_lo MINVALUE -9223372036854775808;
            CREATE TEMP SEQUENCE admitted_tenant_id MINVALUE -9223372036854775808;
            SELECT setval('pg_temp.admitted_hi', hi), setval('pg_temp.admitted_lo', lo),
                   setval('pg_temp.admitted_tenant_id', t) FROM rs_fake;
            CREATE FUNCTION pg_temp.admitted_hi() RETURNS bigint LANGUAGE sql AS 'SELECT hi FROM rs_fake';
            CREATE FUNCTION pg_temp.admitted_lo() RETURNS bigint LANGUAGE sql AS 'SELECT lo FROM rs_fake';
            CREATE FUNCTION pg_temp.admitted_tenant() RETURNS bigint LANGUAGE sql AS 'SELECT t FROM rs_fake';
            SELECT set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false);
            SET LOCAL search_path = pg_temp, rlsproxy, public;";
        let r = c.batch_execute(setup).await.map_err(|e| proxy::db_error(&e));
        eprintln!("[{mode:?}] setup: {r:?}");
        let tid = one(&c, "SELECT rlsproxy.tenant_id()::text").await;
        let fake = one(&c, "SELECT (((pg_temp.admitted_tenant() # ('x' || encode(substr(rlsproxy.admission_key(current_setting('rlsproxy.signed_context'), split_part(rlsproxy.admission_marker(), '.', 2)::bigint), 17, 8), 'hex'))::bit(64)::bigint) << 32) >> 32)::text").await;
        let rows = titles(&c).await;
        eprintln!("[{mode:?}] tenant_id {tid:?} (the fake record says {fake:?}), rows {rows:?}");
        assert_eq!(fake, Ok(Some("2".into())), "the fake record is tenant 2's");
        assert_eq!(tid, Ok(Some("1".into())));
        assert_eq!(rows, Ok(owned(&T1)));
        let upd = try_rows(&c, "UPDATE public.rs_docs SET title = title RETURNING title").await;
        assert!(
            upd.as_ref().map_or(true, |r| r.iter().all(|t| T1.contains(&t[0].as_deref().unwrap_or("")))),
            "{upd:?}"
        );
        c.batch_execute("ROLLBACK").await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// (f) pg_dump / pg_restore.
// ---------------------------------------------------------------------------------------------

/// Held: a strict database dumped and restored into a new one: the helpers read the restored
/// private sequences (not a same-named one elsewhere), the schema stays closed to app_proxy,
/// the keys' triggers fire always, and a restored session gets its own tenant only.
#[tokio::test]
async fn rs_dump_and_restore_keeps_the_binding() {
    let src = "rs_dump_src";
    let dst = "rs_dump_dst";
    let _su = install(src).await;
    let pg = postgres();
    let file = std::env::temp_dir().join(format!("rs_dump_{}.dump", std::process::id()));
    let tool = |name: &str| {
        let mut cmd = Command::new(pg.bindir().join(name));
        cmd.arg("-h").arg(pg.socket_dir()).args(["-p", &pg.port().to_string(), "-U", Postgres::SUPERUSER]);
        cmd
    };
    let out = tool("pg_dump").args(["-Fc", "-f"]).arg(&file).arg(src).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    su_psql("postgres", &["-c", &format!("DROP DATABASE IF EXISTS {dst} WITH (FORCE)")]);
    su_psql("postgres", &["-c", &format!("CREATE DATABASE {dst}")]);
    // A sequence named like a private one where a client could have made it, before the restore.
    su_psql(dst, &["-c", "CREATE SEQUENCE public.admitted_hi; GRANT ALL ON SEQUENCE public.admitted_hi TO PUBLIC"]);
    let out = tool("pg_restore").args(["-d", dst]).arg(&file).output().unwrap();
    eprintln!("pg_restore: {} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&file);
    let su = postgres().superuser_client(dst).await;
    let checks = try_rows(
        &su,
        "SELECT (SELECT string_agg(DISTINCT refobjid::regclass::text, ',') FROM pg_depend
                 WHERE classid = 'pg_proc'::regclass AND objid IN ('rlsproxy.admitted_hi()'::regprocedure,
                       'rlsproxy.admitted_lo()'::regprocedure, 'rlsproxy.admitted_tenant()'::regprocedure)
                   AND refclassid = 'pg_class'::regclass),
                has_schema_privilege('app_proxy', 'rlsproxy_private', 'USAGE')::text,
                (SELECT string_agg(tgname || '=' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
                 WHERE tgrelid = 'rlsproxy_private.keys'::regclass),
                (SELECT string_agg(relname || ':' || relowner::regrole, ',' ORDER BY relname) FROM pg_class
                 WHERE relnamespace = 'rlsproxy_private'::regnamespace AND relkind = 'S')",
    )
    .await;
    eprintln!("restored: {checks:?}");
    assert_eq!(
        checks,
        Ok(vec![vec![
            Some("rlsproxy_private.admitted_hi,rlsproxy_private.admitted_lo,rlsproxy_private.admitted_tenant_id".into()),
            Some("false".into()),
            Some("keys_changed=A,keys_changed_row=A".into()),
            Some(
                "admitted_hi:rlsproxy_owner,admitted_lo:rlsproxy_owner,admitted_tenant_id:rlsproxy_owner,keys_epoch:rlsproxy_owner"
                    .into()
            ),
        ]])
    );
    let (s, _) = tenant_session(dst, "1").await;
    s.batch_execute("SELECT setval('public.admitted_hi', 5)").await.ok();
    assert_eq!(one(&s, "SELECT rlsproxy.tenant_id()::text").await, Ok(Some("1".into())));
    assert_eq!(titles(&s).await, Ok(owned(&T1)));
    let (s2, _) = tenant_session(dst, "2").await;
    assert_eq!(titles(&s2).await, Ok(owned(&T2)));
}
