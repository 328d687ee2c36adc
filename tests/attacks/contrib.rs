//! The guard's list of functions that run SQL text or read a relation by OID must not fall
//! behind the server: every contrib extension that can be created is installed in a
//! database of its own, pg_proc is searched for such functions by their shape, and each one
//! found must be refused by the default guard (or be listed below as reviewed and harmless).

use rlsproxy::config::Config;
use rlsproxy::policy::guard::Guard;

use crate::common::{Postgres, postgres};

/// Functions the search finds that neither run SQL nor return rows of a relation to a
/// tenant, with the reason.
const REVIEWED: &[(&str, &str)] = &[
    ("bt_metap", "pageinspect: refuses every caller but a superuser"),
    ("bt_page_items", "pageinspect: refuses every caller but a superuser"),
    ("bt_page_stats", "pageinspect: refuses every caller but a superuser"),
    ("brin_page_items", "pageinspect: needs a raw page, which only a superuser can get"),
    ("gist_page_items", "pageinspect: needs a raw page, which only a superuser can get"),
    ("hash_bitmap_info", "pageinspect: refuses every caller but a superuser"),
    ("heap_page_item_attrs", "pageinspect: needs a raw page, which only a superuser can get"),
    ("tuple_data_split", "pageinspect: refuses every caller but a superuser"),
    ("pg_prewarm", "loads blocks into the cache, returns a count; needs SELECT on the relation"),
    ("pgrowlocks", "row locks (tuple ids, lockers), no column values; needs SELECT on the relation"),
    ("oid_dist", "btree_gist: the distance between two OIDs"),
    ("file_fdw_validator", "checks foreign-data wrapper options"),
    ("postgres_fdw_validator", "checks foreign-data wrapper options"),
    ("plpgsql_validator", "checks a function body at CREATE FUNCTION (itself refused)"),
];

/// Functions the proxy's role may call, from an extension or the core `*_to_xml*` family,
/// that look like they run SQL or read a relation: a relation (regclass), OID or cursor
/// argument, an argument named like a query or a relation, a `record` result for text input
/// (a query's rows of unknown shape), a trigger (arguments pasted into SQL), anything in
/// dblink; plus every function sharing a C symbol with one of those (crosstab2…4).
const CANDIDATES: &str = r"
WITH ext AS (
    SELECT d.objid AS oid FROM pg_depend AS d
    WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
), callable AS (
    SELECT p.* FROM pg_proc AS p
    WHERE (p.oid IN (SELECT oid FROM ext)
           OR (p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE '%to\_xml%'))
      AND has_function_privilege('app_proxy', p.oid, 'EXECUTE')
      AND NOT 'internal'::regtype = ANY (p.proargtypes)
), flagged AS (
    SELECT c.oid FROM callable AS c
    WHERE c.proname LIKE '%to\_xml%'
       OR 'regclass'::regtype = ANY (c.proargtypes)
       OR 'oid'::regtype = ANY (c.proargtypes)
       OR 'refcursor'::regtype = ANY (c.proargtypes)
       OR EXISTS (SELECT FROM unnest(c.proargnames) AS n
                  WHERE n ~* '^(query|sql|rel|relname|relid|reloid|relation|tbl|table|tablename|cursor|command|cmd|stmt)$')
       OR (c.prorettype = 'record'::regtype AND c.proallargtypes IS NULL AND 'text'::regtype = ANY (c.proargtypes))
       OR c.prorettype = 'trigger'::regtype
       OR c.probin = '$libdir/dblink'
)
SELECT DISTINCT quote_ident(n.nspname), quote_ident(c.proname), c.proname, c.prorettype = 'trigger'::regtype
FROM callable AS c JOIN pg_namespace AS n ON n.oid = c.pronamespace
WHERE c.oid IN (SELECT oid FROM flagged)
   OR (c.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
       AND c.prosrc IN (SELECT prosrc FROM callable WHERE oid IN (SELECT oid FROM flagged)))
ORDER BY 3";

#[tokio::test]
async fn every_contrib_function_that_runs_sql_or_reads_a_relation_by_oid_is_refused() {
    let _role = crate::harness::shared_role().await;
    let db = "attack_contrib";
    let admin = postgres().superuser_client(Postgres::APP_DB).await;
    for sql in [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")] {
        admin.batch_execute(&sql).await.expect("database");
    }
    let su = postgres().superuser_client(db).await;
    let available = su
        .query("SELECT name FROM pg_available_extensions WHERE installed_version IS NULL ORDER BY 1", &[])
        .await
        .expect("available extensions");
    let mut installed = 0;
    for row in available {
        let name: String = row.get(0);
        // Those that need shared_preload_libraries or another platform fail: skipped.
        if su.batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS \"{name}\" CASCADE")).await.is_ok() {
            installed += 1;
        }
    }
    for must in ["tablefunc", "xml2", "refint", "dblink"] {
        let found =
            su.query_opt("SELECT 1 FROM pg_extension WHERE extname = $1", &[&must]).await.expect("pg_extension");
        assert!(found.is_some(), "{must} must be installable ({installed} extensions installed)");
    }

    let guard = Guard::from_config(&Config::default());
    let refused = |sql: &str, rules: &[&str]| {
        guard.check_sql(sql.as_bytes(), None, false).err().is_some_and(|r| rules.contains(&r.rule.name()))
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for row in su.query(CANDIDATES, &[]).await.expect("candidates") {
        let (schema, quoted, name, trigger): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if REVIEWED.iter().any(|(n, _)| *n == name) {
            continue;
        }
        checked += 1;
        let ok = if trigger {
            // Trigger functions run only from triggers, which tenant tokens may not create.
            refused(
                &format!("CREATE TRIGGER t BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION {schema}.{quoted}()"),
                &["create_trigger"],
            )
        } else {
            let rules = ["sql_function", "forbidden_object"];
            refused(&format!("SELECT {schema}.{quoted}()"), &rules)
                && refused(&format!("SELECT * FROM {quoted}('x') AS t(a text)"), &rules)
        };
        if !ok {
            missing.push(format!("{schema}.{name}"));
        }
    }
    assert!(checked >= 40, "only {checked} candidates: the search found too little");
    assert!(
        missing.is_empty(),
        "not refused by the default guard: {missing:?}; add them to [guard] sql_functions \
         (src/config/sections.rs) or, if harmless, to REVIEWED in tests/attacks/contrib.rs with the reason"
    );
    drop(su);
    admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.expect("drop database");
}
