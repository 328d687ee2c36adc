//! Red team of strict mode's admissions: the statement guard OFF,
//! tenant 1 runs arbitrary SQL as app_proxy, in both pool modes, against a table under strict
//! policies (`ra_docs`, with an `admin_bypass` policy bound to the signed role). Each test
//! asserts the secure outcome and prints what it saw (`-- --nocapture`).

use std::sync::Once;
use std::time::Duration;

use rlsproxy::config::PoolMode;
use rlsproxy::policy::strict;
use tokio_postgres::Client;

use crate::common::proxy::{self, TestProxy};
use crate::common::queries::try_rows;
use crate::common::wire::texts;
use crate::common::{Postgres, postgres};
use crate::strict_suite::{self as suite, Outcome, now, one, owned};
use crate::{Msgs, data_rows, raw_login, tags};

const KID: &str = "ra_k";
const KEY_HEX: &str = "7261646d697373696f6e7261646d697373696f6e7261646d697373696f6e2121";
const T1: [&str; 2] = ["ra-1-a", "ra-1-b"];
const T2: [&str; 2] = ["ra-2-a", "ra-2-b"];
const ALL: [&str; 5] = ["ra-1-a", "ra-1-b", "ra-2-a", "ra-2-b", "ra-3-a"];
const PREFIX: &str = "ra";
const TITLES: &str = "SELECT title FROM public.ra_docs ORDER BY id";

fn su_psql(sql: &str) {
    suite::su_psql(Postgres::APP_DB, &["-c", sql]);
}

/// The strict table, once per binary, with a role policy for admin_role.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        suite::create_docs(
            Postgres::APP_DB,
            PREFIX,
            "app_proxy, admin_role",
            "DROP POLICY IF EXISTS admin_bypass ON public.ra_docs;
             CREATE POLICY admin_bypass ON public.ra_docs FOR ALL TO admin_role USING (true) WITH CHECK (true);",
        );
    });
}

async fn strict_proxy(mode: PoolMode, size: usize) -> TestProxy {
    setup();
    let mut cfg = suite::strict_config(KID, KEY_HEX, mode, size).await;
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into()];
    proxy::start(cfg).await
}

async fn titles(c: &Client) -> Outcome {
    suite::titles(c, TITLES).await
}

/// Fails when `seen` holds any row that is not tenant 1's.
fn only_tenant1(label: &str, seen: &Outcome) {
    suite::only(label, seen, &T1);
}

/// Values tenant 1 can make: its own (read from the setting) and crafted ones.
async fn crafted(c: &Client) -> Vec<(&'static str, String)> {
    let own = one(c, "SELECT current_setting('rlsproxy.signed_context')").await.unwrap().unwrap();
    let f: Vec<&str> = own.split('.').collect();
    let exp = now() + 3600;
    let mine = [0x42u8; 32];
    let p2 = strict::sign(KID, &mine, "2", None, exp);
    let padm = strict::sign(KID, &mine, "1", Some("admin_role"), exp);
    let p2 = p2.split('.').nth(2).unwrap().to_string();
    let padm = padm.split('.').nth(2).unwrap().to_string();
    let mut last = f[3].to_string();
    // Same MAC with its last base64url character's unused low bits changed.
    let c = last.pop().unwrap();
    let idx =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".iter().position(|&x| x == c as u8).unwrap();
    let alt = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[idx ^ 1] as char;
    vec![
        ("own", own.clone()),
        ("tenant 2 payload, own MAC", format!("{}.{}.{}.{}", f[0], f[1], p2, f[3])),
        ("admin payload, own MAC", format!("{}.{}.{}.{}", f[0], f[1], padm, f[3])),
        ("tenant 2 signed with an attacker key under the real kid", strict::sign(KID, &mine, "2", None, exp)),
        ("tenant 2 signed with an attacker key, unknown kid", strict::sign("ra_nokid", &mine, "2", None, exp)),
        ("own, MAC low bits flipped", format!("{}.{}.{}.{}{}", f[0], f[1], f[2], last, alt)),
        ("own + '.'", format!("{own}.")),
        ("own, V1", own.replacen("v1", "V1", 1)),
        ("own + newline", format!("{own}\n")),
        ("own + '='", format!("{own}=")),
        ("empty", String::new()),
    ]
}

/// setval/nextval/ALTER on the admission sequences, DISCARD SEQUENCES (visible and hidden).
#[tokio::test]
async fn ra_admission_records_cannot_be_written() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        only_tenant1(&format!("{mode:?} baseline"), &titles(&c).await);
        for sql in [
            "SELECT setval('rlsproxy_private.admitted_tenant_id', (4294967295::bigint << 32) | 2)",
            "SELECT pg_catalog.setval('rlsproxy_private.admitted_hi'::regclass, 1, true)",
            "SELECT setval('rlsproxy_private.admitted_lo', 1, false)",
            "SELECT nextval('rlsproxy_private.admitted_hi')",
            "SELECT nextval('rlsproxy_private.keys_epoch')",
            "ALTER SEQUENCE rlsproxy_private.admitted_tenant_id RESTART WITH 2",
            "ALTER SEQUENCE rlsproxy_private.admitted_tenant_id OWNED BY public.ra_docs.tenant_id",
            "DROP SEQUENCE rlsproxy_private.admitted_hi",
            // By OID, which no schema privilege guards: the sequence's own does.
            "SELECT setval(c.oid, (4294967295::bigint << 32) | 2) FROM pg_class c \
             WHERE c.relname = 'admitted_tenant_id' AND c.relkind = 'S'",
            "SELECT nextval(c.oid) FROM pg_class c \
             WHERE c.relname = 'admitted_hi' AND c.relkind = 'S'",
        ] {
            let r = try_rows(&c, sql).await;
            eprintln!("[{mode:?}] {sql} -> {r:?}");
            assert_eq!(r.map_err(|e| e.0), Err("42501".to_string()), "{mode:?}: {sql}");
        }
        let g = try_rows(&c, "GRANT UPDATE, USAGE ON SEQUENCE rlsproxy_private.admitted_hi TO app_proxy").await;
        let p = one(
            &c,
            "SELECT has_sequence_privilege(c.oid, 'UPDATE')::text || has_sequence_privilege(c.oid, 'USAGE')::text \
             FROM pg_class c WHERE c.relname = 'admitted_hi' AND c.relkind = 'S'",
        )
        .await;
        eprintln!("[{mode:?}] GRANT UPDATE, USAGE on admitted_hi -> {g:?}; privileges now {p:?}");
        assert_eq!(p, Ok(Some("falsefalse".into())));
        for sql in [
            "DISCARD SEQUENCES",
            "DO $$ BEGIN EXECUTE 'DISC' || 'ARD SEQUENCES'; END $$",
            "DO $$ BEGIN EXECUTE 'DISC' || 'ARD SEQUENCES'; PERFORM pg_catalog.set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false); END $$",
        ] {
            let r = try_rows(&c, sql).await;
            let a = titles(&c).await;
            let b = titles(&c).await;
            eprintln!("[{mode:?}] {sql} -> {r:?}; then {a:?}; then {b:?}");
            only_tenant1(&format!("{mode:?} after {sql}"), &a);
            assert_eq!(b, Ok(owned(&T1)), "{mode:?} after {sql}");
        }
    }
}

/// rlsproxy.admit / record_admission called with crafted values, then the value set in the
/// same session (and the marker set by hand).
#[tokio::test]
async fn ra_crafted_values_admit_nothing() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        for (name, v) in crafted(&c).await {
            let q = v.replace('\'', "''");
            // One simple Query: one transaction, so the proxy's injection runs before it only.
            let sql = format!(
                "SELECT rlsproxy.admit('{q}', true)::text, rlsproxy.record_admission('{q}')::text, \
                        pg_catalog.set_config('rlsproxy.signed_context', '{q}', false), \
                        rlsproxy.is_admitted('{q}')::text"
            );
            let admitted = try_rows(&c, &sql).await;
            let seen = try_rows(
                &c,
                &format!(
                    "SELECT pg_catalog.set_config('rlsproxy.signed_context', '{q}', false); \
                     SELECT pg_catalog.set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false); \
                     {TITLES}"
                ),
            )
            .await;
            let seen: Outcome =
                seen.map(|rows| rows.into_iter().skip(2).map(|r| r[0].clone().unwrap_or_default()).collect());
            let ids = one(
                &c,
                &format!(
                    "SELECT pg_catalog.set_config('rlsproxy.signed_context', '{q}', false); \
                     SELECT concat_ws(',', rlsproxy.tenant_id(), rlsproxy.tenant(), rlsproxy.role())"
                ),
            )
            .await;
            eprintln!("[{mode:?}] {name}: admit/record/is_admitted = {admitted:?}; accessors {ids:?}");
            only_tenant1(&format!("{mode:?} {name}"), &seen);
            // Statement by statement (extended protocol, each its own transaction with the
            // proxy's set_config in front).
            only_tenant1(&format!("{mode:?} {name} next txn"), &titles(&c).await);
        }
    }
}

/// The setting changed after the admission within one transaction; SET ROLE and
/// set_config('role') after it; both the admitted and the slow way.
#[tokio::test]
async fn ra_changes_after_admission_in_one_transaction() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        let values = crafted(&c).await;
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute("SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)").await.unwrap();
        for (name, v) in &values {
            let q = v.replace('\'', "''");
            c.batch_execute(&format!("SELECT set_config('rlsproxy.signed_context', '{q}', true)")).await.unwrap();
            only_tenant1(&format!("{mode:?} in block, {name}"), &titles(&c).await);
        }
        c.batch_execute(
            "SELECT set_config('rlsproxy.signed_context', $x${}$x$, true)".replace("{}", &values[0].1).as_str(),
        )
        .await
        .unwrap();
        for sql in ["SET ROLE admin_role", "SELECT set_config('role', 'admin_role', true)", "SET LOCAL ROLE admin_role"]
        {
            c.batch_execute(sql).await.unwrap();
            let who = one(&c, "SELECT current_user || ' ' || coalesce(rlsproxy.role(), '<null>')").await;
            let seen = titles(&c).await;
            eprintln!("[{mode:?}] {sql}: {who:?}");
            only_tenant1(&format!("{mode:?} in block after {sql}"), &seen);
            assert_eq!(seen, Ok(owned(&T1)), "{mode:?} {sql}");
        }
        c.batch_execute("ROLLBACK").await.unwrap();
        // Session-level role and insert/update/delete of tenant 2's rows as admin_role.
        for sql in [
            "SET ROLE admin_role; UPDATE public.ra_docs SET title = title WHERE tenant_id = 2",
            "SELECT set_config('role', 'admin_role', false); DELETE FROM public.ra_docs WHERE tenant_id = 2 AND false",
            "SET ROLE admin_role; INSERT INTO public.ra_docs (tenant_id, title) VALUES (2, 'ra-injected')",
        ] {
            let r = try_rows(&c, &format!("{sql} RETURNING title")).await;
            eprintln!("[{mode:?}] {sql} -> {r:?}");
            assert!(
                r.as_ref().map_or(true, |rows| rows.iter().all(|row| row[0].as_deref() == Some("admin_role"))),
                "{mode:?}: {sql}: {r:?}"
            );
            only_tenant1(&format!("{mode:?} after {sql}"), &titles(&c).await);
            let _ = c.batch_execute("RESET ROLE").await;
        }
        // Control: a token with the admin role sees every row.
        let admin = proxy.connect(&proxy.token_with("1", Some("admin_role"), Duration::from_secs(3600), &[])).await;
        assert_eq!(titles(&admin).await, Ok(owned(&ALL)), "{mode:?}: the admin control");
    }
}

/// Objects shadowing the verifier's names: temp functions/operators/tables, search_path.
#[tokio::test]
async fn ra_shadowing_changes_nothing() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        let shadow = "
            CREATE FUNCTION pg_temp.currval(regclass) RETURNS bigint LANGUAGE sql AS 'SELECT (4294967295::bigint << 32) | 2';
            CREATE FUNCTION pg_temp.current_setting(text, boolean) RETURNS text LANGUAGE sql AS 'SELECT ''x''';
            CREATE FUNCTION pg_temp.ra_gt(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true';
            CREATE OPERATOR pg_temp.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pg_temp.ra_gt);
            CREATE TEMP TABLE admitted_tenant_id (last_value bigint);
            CREATE TEMP TABLE keys (kid text, secret bytea, inner_pad bytea, outer_pad bytea);
            CREATE TEMP VIEW ra_docs AS SELECT * FROM public.ra_docs;
            CREATE SCHEMA ra_mine";
        let r = try_rows(&c, shadow).await;
        eprintln!("[{mode:?}] shadow objects: {r:?}");
        let r = try_rows(
            &c,
            "CREATE TEMP TABLE t(); DROP TABLE t; \
             CREATE FUNCTION pg_temp.currval(regclass) RETURNS bigint LANGUAGE sql AS 'SELECT (4294967295::bigint << 32) | 2'; \
             CREATE FUNCTION pg_temp.ra_gt(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'; \
             CREATE OPERATOR pg_temp.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = pg_temp.ra_gt); \
             CREATE TEMP TABLE admitted_tenant_id (last_value bigint); \
             CREATE TEMP TABLE keys (kid text, secret bytea, inner_pad bytea, outer_pad bytea)",
        )
        .await;
        eprintln!("[{mode:?}] shadow objects (temp only): {r:?}");
        for sp in ["pg_temp, rlsproxy, pg_catalog, public", "pg_temp, public, pg_catalog", "rlsproxy, pg_temp"] {
            c.batch_execute(&format!("SET search_path = {sp}")).await.unwrap();
            only_tenant1(&format!("{mode:?} search_path {sp}"), &titles(&c).await);
            let v = one(&c, "SELECT concat_ws(',', rlsproxy.tenant_id(), rlsproxy.tenant())").await;
            eprintln!("[{mode:?}] {sp}: accessors {v:?}");
            assert_eq!(v, Ok(Some("1,1".into())));
        }
        for sql in [
            "CREATE FUNCTION public.ra_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE SCHEMA ra_mine",
            "CREATE FUNCTION rlsproxy.ra_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ] {
            let r = try_rows(&c, sql).await;
            eprintln!("[{mode:?}] {sql} -> {r:?}");
            assert_eq!(r.map_err(|e| e.0), Err("42501".into()), "{sql}");
        }
    }
}

/// The keys: no privilege of app_proxy or admin_role reads, changes or locks them.
#[tokio::test]
async fn ra_keys_are_out_of_reach() {
    let proxy = strict_proxy(PoolMode::Transaction, 2).await;
    let c = proxy.connect(&proxy.token("1")).await;
    for role in ["RESET ROLE", "SET ROLE admin_role"] {
        c.batch_execute(role).await.unwrap();
        for sql in [
            "SELECT secret FROM rlsproxy_private.keys",
            "SELECT inner_pad FROM rlsproxy_private.keys",
            "COPY rlsproxy_private.keys TO STDOUT",
            "DELETE FROM rlsproxy_private.keys",
            "UPDATE rlsproxy_private.keys SET kid = kid",
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('ra_x', decode(repeat('00', 32), 'hex'))",
            "TRUNCATE rlsproxy_private.keys",
            "DO $$ BEGIN LOCK TABLE rlsproxy_private.keys IN SHARE MODE; END $$",
            "DO $$ BEGIN LOCK TABLE rlsproxy_private.keys IN ACCESS SHARE MODE; END $$",
            "SELECT rlsproxy.hmac_pad('\\x00'::bytea, 54)",
            "ALTER TABLE rlsproxy_private.keys DISABLE TRIGGER keys_changed",
        ] {
            let r = try_rows(&c, sql).await;
            eprintln!("[{role}] {sql} -> {r:?}");
            assert_eq!(r.map_err(|e| e.0), Err("42501".into()), "{role}: {sql}");
        }
        let stats = try_rows(&c, "SELECT count(*)::text FROM pg_stats WHERE schemaname = 'rlsproxy'").await;
        eprintln!("[{role}] pg_stats rows of rlsproxy: {stats:?}");
        assert_eq!(stats, Ok(vec![vec![Some("0".into())]]));
    }
}

/// Transaction pooling over one connection (and session pooling): tenant 1 leaves an admission
/// record, markers, settings, a WITH HOLD cursor, temp objects, SQL prepared statements and a
/// trap view that would copy the next borrower's signed value into a large object; tenant 2
/// then uses the connection; tenant 1 gets it back. Some of the state is hidden from the
/// lexical pinning check (so the connection goes back to the pool without the pin's reset).
#[tokio::test]
async fn ra_state_left_for_the_next_borrower() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 1).await;
        let _ = postgres()
            .superuser_client(Postgres::APP_DB)
            .await
            .batch_execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE lomowner = 'app_proxy'::regrole")
            .await;
        let attacker = proxy.connect(&proxy.token("1")).await;
        let hidden = "DO $d$ BEGIN
               EXECUTE format('SELECT %s(%L, %L, false)', 'set_' || 'config', 'rlsproxy.admitted', rlsproxy.admission_marker());
               EXECUTE format('SELECT %s(%L, %L, false)', 'set_' || 'config', 'app.current_tenant', '2');
               EXECUTE 'CREATE ' || 'TEMP TABLE ra_loot (v text)';
               EXECUTE 'CREATE ' || 'TEMP VIEW ra_docs AS SELECT d.* FROM public.ra_docs d, '
                       || 'LATERAL (SELECT lo_from_bytea(0, convert_to(coalesce(current_setting(''rlsproxy.signed_context'', true), ''-''), ''UTF8''))) x';
               EXECUTE 'PRE' || 'PARE ra_p AS SELECT title FROM public.ra_docs ORDER BY id';
               EXECUTE format('SET %s = %L', 'search_path', 'pg_temp, public');
             END $d$";
        let r = try_rows(&attacker, hidden).await;
        eprintln!("[{mode:?}] hidden state: {r:?}");
        let r = try_rows(&attacker, "SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)").await;
        eprintln!("[{mode:?}] own admission: {r:?}");
        let trap = try_rows(&attacker, "SELECT title FROM ra_docs ORDER BY id").await;
        eprintln!("[{mode:?}] the trap view for tenant 1: {trap:?}");
        if mode == PoolMode::Session {
            drop(attacker);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let victim = proxy.connect(&proxy.token("2")).await;
        let seen = try_rows(&victim, "SELECT title FROM ra_docs ORDER BY id").await;
        let state = try_rows(
            &victim,
            "SELECT rlsproxy.tenant_id()::text, current_setting('rlsproxy.admitted', true), \
                    current_setting('app.current_tenant', true), current_setting('search_path'), \
                    (SELECT count(*) FROM pg_prepared_statements)::text, \
                    (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())::text",
        )
        .await;
        eprintln!("[{mode:?}] victim sees {seen:?}; state {state:?}");
        assert_eq!(
            seen.map(|r| r.into_iter().map(|r| r[0].clone().unwrap()).collect::<Vec<_>>()),
            Ok(owned(&T2)),
            "{mode:?}"
        );
        drop(victim);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let attacker = proxy.connect(&proxy.token("1")).await;
        let loot =
            try_rows(&attacker, "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata ORDER BY oid")
                .await;
        eprintln!("[{mode:?}] loot: {loot:?}");
        only_tenant1(&format!("{mode:?} attacker again"), &titles(&attacker).await);
        let tenants = try_rows(
            &attacker,
            "SELECT coalesce(rlsproxy.payload_of(v) ->> 'tenant', '?') FROM \
             (SELECT convert_from(lo_get(oid), 'UTF8') AS v FROM pg_largeobject_metadata) AS l WHERE v LIKE 'v1.%'",
        )
        .await;
        eprintln!("[{mode:?}] tenants of the loot: {tenants:?}");
        assert!(
            tenants.as_ref().map_or(true, |rows| rows.iter().all(|r| r[0].as_deref() == Some("1"))),
            "{mode:?}: another tenant's signed value reached tenant 1: {loot:?}"
        );
        let _ = attacker.batch_execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata").await;
    }
}

/// Transaction pooling, one server connection, tenants 1 and 2 alternating for a while
/// (past the 5 s refresh), tenant 1 doing something odd with the admission every time.
#[tokio::test]
async fn ra_interleaved_on_one_connection() {
    let proxy = strict_proxy(PoolMode::Transaction, 1).await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    let victim = proxy.connect(&proxy.token("2")).await;
    let own = one(&attacker, "SELECT current_setting('rlsproxy.signed_context')").await.unwrap().unwrap();
    let moves = [
        "DO $$ BEGIN EXECUTE 'DISC' || 'ARD SEQUENCES'; END $$",
        "SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)",
        "DO $$ BEGIN EXECUTE format('SELECT %s(%L, %L, false)', 'set_' || 'config', 'rlsproxy.admitted', rlsproxy.admission_marker()); END $$",
        "DO $$ BEGIN EXECUTE format('SELECT %s(%L, %L, false)', 'set_' || 'config', 'rlsproxy.signed_context', 'garbage'); END $$",
        "BEGIN; SELECT rlsproxy.record_admission(current_setting('rlsproxy.signed_context')); ROLLBACK",
        "DO $$ BEGIN EXECUTE 'SET ' || 'ROLE admin_role'; END $$",
        "DO $$ BEGIN EXECUTE 'SET ' || 'default_transaction_isolation = serializable'; END $$",
        "DO $$ BEGIN EXECUTE 'SET ' || 'default_transaction_read_only = on'; END $$",
        "DO $$ BEGIN EXECUTE 'RE' || 'SET ALL'; END $$",
        "SELECT 1/0",
    ];
    let start = std::time::Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(12) {
        let m = moves[i % moves.len()];
        let r = try_rows(&attacker, m).await;
        if i < moves.len() {
            eprintln!("move {m} -> {r:?}");
        }
        let (a, v) = tokio::join!(titles(&attacker), titles(&victim));
        only_tenant1(&format!("attacker after {m}"), &a);
        assert_eq!(v, Ok(owned(&T2)), "victim after {m}");
        let cur = one(&victim, "SELECT current_setting('rlsproxy.signed_context')").await.unwrap();
        assert_ne!(cur.as_deref(), Some(own.as_str()), "the victim runs with tenant 1's value");
        i += 1;
        if i % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    eprintln!("{i} rounds");
}

/// Bind of the unnamed portal to `statement` with text `values`, as the proxy's own encoder
/// writes it (one text format code for the parameters, one for the results), then Execute.
fn bind_exec(statement: &str, values: &[&str]) -> Msgs {
    Msgs::new().bind("", statement, &[0], &texts(values), &[0]).execute("", 0)
}

/// Parse of `sql` (unnamed), then [`bind_exec`].
fn run(sql: &str, values: &[&str]) -> Msgs {
    Msgs::new().parse("", sql, &[]).then(&bind_exec("", values))
}

/// [`run`] of each of `sqls`, without parameters, and no Sync.
fn batch(sqls: &[&str]) -> Msgs {
    sqls.iter().fold(Msgs::new(), |all, sql| all.then(&run(sql, &[])))
}

/// Raw pipelines sent in one write on a connection tenant 2 used last: Sync/Flush first,
/// errors mid-batch, a DISCARD ALL then a SELECT before the Sync, Queries after it; every
/// DataRow tenant 1 gets must be its own.
#[tokio::test]
async fn ra_raw_pipelines_around_the_adoption() {
    let forged = "v1.ra_k.eyJ0ZW5hbnQiOiIyIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let context = ["app.current_tenant", "2", "role", "admin_role", "rlsproxy.signed_context", ""];
    let set_context = "SELECT pg_catalog.set_config('rlsproxy.signed_context', '', false)";
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 1).await;
        let pipelines: Vec<(&str, Msgs)> = vec![
            ("sync flush first", Msgs::new().sync().flush().then(&batch(&[TITLES])).sync()),
            ("error mid-batch then more", batch(&[TITLES, "SELEC nonsense", TITLES]).sync().query(TITLES)),
            ("discard all then select before sync", batch(&["DISCARD ALL", TITLES]).sync()),
            ("discard all query then select query", Msgs::new().query("DISCARD ALL").query(TITLES).query(TITLES)),
            (
                "admit garbage forced then select",
                run("SELECT rlsproxy.admit($1, true)::text", &[forged]).then(&batch(&[TITLES])).sync(),
            ),
            (
                "set context empty + marker then select, no sync between",
                batch(&[set_context, TITLES]).sync().query(TITLES),
            ),
            (
                "reserved statement names",
                Msgs::new()
                    .query("SELECT 1")
                    .then(&bind_exec("rlsproxy_admit", &["x"]))
                    .then(&bind_exec("rlsproxy_ctx", &context))
                    .sync()
                    .query(TITLES),
            ),
        ];
        for (name, msgs) in pipelines {
            // Tenant 2 uses the connection last.
            let victim = proxy.connect(&proxy.token("2")).await;
            assert_eq!(titles(&victim).await, Ok(owned(&T2)));
            drop(victim);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
            c.send_msgs(&msgs).await;
            let mut msgs = Vec::new();
            while let Ok(Some(m)) = c.try_read_message(Duration::from_secs(2)).await {
                msgs.push(m);
            }
            let rows: Vec<String> = data_rows(&msgs).into_iter().map(|r| r[0].clone().unwrap_or_default()).collect();
            let errors: Vec<String> = msgs
                .iter()
                .filter(|(t, _)| *t == b'E')
                .map(|(_, b)| {
                    let f = crate::common::raw::error_fields(b);
                    format!("{} {}", f[&'C'], f[&'M'])
                })
                .collect();
            eprintln!("[{mode:?}] {name}: {} rows {rows:?} errors {errors:?}", tags(&msgs));
            assert!(rows.iter().all(|t| !T2.contains(&t.as_str()) && t != "ra-3-a"), "{mode:?} {name}: {rows:?}");
        }
    }
}

/// Weaker: the last admission of any session is readable (its tenant and expiry) through the
/// sequence's on-disk value, which SELECT on a sequence shows. After an admission the shared
/// value is blanked, but in between it is what the session's currval is: that must not show
/// the tenant or the expiry either (polling caught about 2 % of admissions when it did).
#[tokio::test]
async fn ra_other_tenants_admissions_are_not_readable() {
    // Session pooling: each client keeps the connection it was admitted on.
    let mut leaked = Vec::new();
    for guard in [false, true] {
        setup();
        let mut cfg = proxy::strict_without_guard(postgres(), KID, KEY_HEX).await;
        cfg.guard.enabled = guard;
        cfg.pool.mode = PoolMode::Session;
        cfg.pool.size = 2;
        let proxy = proxy::start(cfg).await;
        let attacker = proxy.connect(&proxy.token("1")).await;
        let _ = titles(&attacker).await;
        let victim = proxy.connect(&proxy.token_with("7", None, Duration::from_secs(777), &[])).await;
        let _ = titles(&victim).await;
        // What the shared value held for an instant: the victim's own record.
        let record = try_rows(
            &victim,
            "SELECT ((rlsproxy.admitted_tenant() << 32) >> 32)::int::text, \
                    (((rlsproxy.admitted_tenant() >> 32) & 4294967295) \
                     - extract(epoch FROM now())::bigint BETWEEN 700 AND 800)::text",
        )
        .await
        .expect("the victim reads its own record");
        eprintln!("[guard {guard}] the record the shared value showed for an instant: {record:?}");
        if record[0][0].as_deref() == Some("7") || record[0][1].as_deref() == Some("true") {
            leaked.push(guard);
        }
        let seen = try_rows(
            &attacker,
            "SELECT (last_value & 4294967295)::int::text AS tenant, \
                    to_timestamp((last_value >> 32) & 4294967295)::text AS exp FROM rlsproxy_private.admitted_tenant_id",
        )
        .await;
        eprintln!("[guard {guard}] last admission of any session, read by tenant 1: {seen:?}");
        if seen.as_ref().is_ok_and(|r| r[0][0].as_deref() == Some("7")) {
            leaked.push(guard);
        }
    }
    assert!(leaked.is_empty(), "tenant 1 reads that tenant 7 was just admitted, and until when (guard on: {leaked:?})");
}

/// Weaker: a client holds the SHARE lock that record_admission takes, in an open block, and
/// with it holds off the deletion of a key (revocation) as long as it likes.
#[tokio::test]
async fn ra_a_tenant_cannot_hold_off_key_revocation() {
    let mut held_off = Vec::new();
    for guard in [false, true] {
        let mut cfg = proxy::strict_without_guard(postgres(), KID, KEY_HEX).await;
        let _keys = proxy::KEYS.lock().await;
        setup();
        cfg.guard.enabled = guard;
        cfg.pool.mode = PoolMode::Transaction;
        let proxy = proxy::start(cfg).await;
        su_psql(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('ra_compromised', decode(repeat('99', 32), 'hex')) ON CONFLICT DO NOTHING",
        );
        let attacker = proxy.connect(&proxy.token("1")).await;
        attacker.batch_execute("BEGIN").await.unwrap();
        let held =
            attacker.batch_execute("SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)").await;
        eprintln!("[guard {guard}] admit in an open block: {:?}", held.as_ref().map_err(proxy::db_error));
        let su = postgres().superuser_client(Postgres::APP_DB).await;
        su.batch_execute("SET lock_timeout = '2s'").await.unwrap();
        let revoked = su.batch_execute("DELETE FROM rlsproxy_private.keys WHERE kid = 'ra_compromised'").await;
        eprintln!("[guard {guard}] the superuser's DELETE of a key: {:?}", revoked.as_ref().map_err(proxy::db_error));
        let _ = attacker.batch_execute("ROLLBACK").await;
        su.batch_execute("DELETE FROM rlsproxy_private.keys WHERE kid = 'ra_compromised'").await.unwrap();
        if revoked.is_err() {
            held_off.push(guard);
        }
    }
    assert!(held_off.is_empty(), "tenant 1's open block held off the key's revocation (guard on: {held_off:?})");
}

/// `ALTER ROLE CURRENT_USER SET` cannot be denied to the role itself. With the guard on it is
/// refused (rule `alter_settings`); with the guard off it locks every tenant out of new server
/// connections, failing closed with the upstream-role check's message, until an operator
/// resets the role (docs/security.md, "Statement guard", rule `alter_role`). Run as a role of
/// its own (`ra_lockout`, a NOINHERIT member of admin_role like app_proxy), so that the other
/// tests' connections are untouched.
#[tokio::test]
async fn ra_role_settings_are_refused_or_lock_out_closed() {
    setup();
    su_psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ra_lockout') THEN \
           CREATE ROLE ra_lockout LOGIN NOINHERIT PASSWORD 'ra-lockout-pw' IN ROLE admin_role; END IF; END $$; \
         GRANT SELECT ON public.ra_docs TO ra_lockout",
    );
    let own_role = |mut cfg: rlsproxy::config::Config| {
        cfg.upstream.user = "ra_lockout".into();
        cfg.upstream.password = Some("ra-lockout-pw".into());
        cfg.pool.size = 1;
        cfg
    };
    let mut cfg = own_role(proxy::strict_without_guard(postgres(), KID, KEY_HEX).await);
    cfg.guard.enabled = true;
    let guarded = proxy::start(cfg).await;
    let c = guarded.connect(&guarded.token("1")).await;
    let refused = try_rows(&c, "ALTER ROLE CURRENT_USER SET work_mem = '4MB'").await.map(|_| ());
    assert_eq!(refused.map_err(|(code, _)| code), Err("42501".to_string()), "the guard refuses ALTER ROLE … SET");

    let unguarded = own_role(proxy::strict_without_guard(postgres(), KID, KEY_HEX).await);
    let proxy = proxy::start(unguarded.clone()).await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    let planted = try_rows(&attacker, "ALTER ROLE CURRENT_USER SET work_mem = '4MB'").await;
    drop(attacker);
    let fresh = proxy::start(unguarded).await;
    let victim = fresh.try_connect(&fresh.token("2")).await;
    su_psql("ALTER ROLE ra_lockout RESET ALL");
    assert!(planted.is_ok(), "{planted:?}");
    let (code, message) = proxy::db_error(&victim.expect_err("a new server connection under role settings"));
    assert_eq!(code, "08006");
    let expected = "rlsproxy: the upstream server is unavailable: unsafe upstream role: upstream.user ra_lockout \
                    starts every connection with settings (ALTER ROLE ra_lockout SET work_mem=4MB)";
    assert!(message.starts_with(expected), "{message}");
    let after = fresh.connect(&fresh.token("2")).await;
    assert_eq!(titles(&after).await, Ok(owned(&T2)), "back once the role is reset");
}

/// Parallel workers (their own pid: the marker never matches there) with a forged marker, and
/// the unforced admit's answer for a value it never verified.
#[tokio::test]
async fn ra_parallel_workers_and_the_unforced_admit() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = strict_proxy(mode, 2).await;
        let c = proxy.connect(&proxy.token("1")).await;
        let sql = format!(
            "SET force_parallel_mode = on; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
             SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; {TITLES}"
        );
        let seen: Outcome =
            try_rows(&c, &sql).await.map(|rows| rows.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect());
        only_tenant1(&format!("{mode:?} parallel"), &seen);
        let plan = try_rows(&c, &format!("EXPLAIN (COSTS OFF) {TITLES}")).await;
        eprintln!("[{mode:?}] plan: {plan:?}");
        // A marker naming every pid a worker could have is impossible; name the next few.
        for delta in 1..=4 {
            let forged = format!(
                "SELECT pg_catalog.set_config('rlsproxy.admitted', (pg_backend_pid() + {delta})::text || '.' || \
                 split_part(rlsproxy.admission_marker(), '.', 2), false); {TITLES}"
            );
            let seen: Outcome = try_rows(&c, &forged)
                .await
                .map(|rows| rows.into_iter().skip(1).map(|r| r[0].clone().unwrap_or_default()).collect());
            only_tenant1(&format!("{mode:?} parallel, marker pid+{delta}"), &seen);
        }
        let unforced = try_rows(
            &c,
            "SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)::text, ''; \
             SELECT rlsproxy.admit('garbage')::text, rlsproxy.is_admitted('garbage')::text",
        )
        .await;
        eprintln!("[{mode:?}] unforced admit of 'garbage' (admit, is_admitted): {unforced:?}");
        let answers: Vec<Vec<Option<String>>> = unforced.expect("admit and is_admitted");
        assert_eq!(answers.last(), Some(&vec![Some("false".into()), Some("false".into())]), "{mode:?}");
    }
}

/// A client cannot hold off a key's revocation by queueing a lock request on the key table
/// behind one it holds (PostgreSQL locks a table a statement names before it checks
/// privileges): the table is in a schema the proxy's role cannot use, so nothing is locked
/// and the superuser's DELETE does not wait.
#[tokio::test]
async fn ra_a_tenant_cannot_hold_off_revocation_with_a_queued_lock() {
    let pairs = [
        (
            "PREPARE ra_x AS DELETE FROM rlsproxy_private.keys",
            "CREATE TRIGGER ra_t AFTER DELETE ON rlsproxy_private.keys EXECUTE FUNCTION rlsproxy.keys_changed()",
        ),
        (
            "SELECT rlsproxy.admit(current_setting('rlsproxy.signed_context'), true)",
            "CREATE RULE ra_r AS ON DELETE TO rlsproxy_private.keys DO INSTEAD NOTHING",
        ),
    ];
    for (holder, queued) in pairs {
        let proxy = strict_proxy(PoolMode::Transaction, 4).await;
        let _keys = proxy::KEYS.lock().await;
        let su = postgres().superuser_client(Postgres::APP_DB).await;
        su.batch_execute(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('ra_compromised2', decode(repeat('77', 32), 'hex')) \
             ON CONFLICT DO NOTHING",
        )
        .await
        .unwrap();
        let a1 = proxy.connect(&proxy.token("1")).await;
        let a2 = proxy.connect(&proxy.token("1")).await;
        a1.batch_execute("BEGIN").await.unwrap();
        let _ = a1.batch_execute(holder).await;
        let q = queued.to_string();
        let waiter = tokio::spawn(async move { a2.batch_execute(&q).await.map_err(|e| proxy::db_error(&e)) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        su.batch_execute("SET lock_timeout = '3s'").await.unwrap();
        let revoked = su.batch_execute("DELETE FROM rlsproxy_private.keys WHERE kid = 'ra_compromised2'").await;
        let _ = a1.batch_execute("ROLLBACK").await;
        let queued_outcome = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("ended").expect("join");
        assert_eq!(revoked.map_err(|e| proxy::db_error(&e)), Ok(()), "{holder} / {queued}");
        assert_eq!(queued_outcome.map_err(|(code, _)| code), Err("42501".to_string()), "{queued}");
    }
}
