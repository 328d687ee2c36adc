//! Attempts that only strict mode answers (they run in the configuration without the guard):
//! contrib functions that run SQL given as text or trigger arguments, role switches through
//! dynamic SQL and function `SET` clauses, and objects that shadow what the verifier or the
//! policies use. Each either changes the session's role (the proxy's role is a member of
//! `admin_role`, whose policy on the strict table gives every row unless it is bound to the
//! signed role) or its context, then reads the table in the same transaction.

use crate::Attempt;
use crate::Expect::Server;

/// The attempts of this file.
pub const ATTEMPTS: &[Attempt] = &[
    Attempt::block(
        "crosstab running set_config('role')",
        &["SELECT * FROM crosstab($q$SELECT set_config('role', 'admin_role', false), 'c'::text, 'v'::text$q$) \
           AS t(a text, b text)"],
        Server,
    ),
    Attempt::block(
        "crosstab setting a forged context and the plain tenant",
        &["SELECT * FROM crosstab($q$SELECT set_config('rlsproxy.signed_context', '{forged}', false) \
             || set_config('app.current_tenant', '2', false), 'c'::text, 'v'::text$q$) AS t(a text, b text)"],
        Server,
    ),
    Attempt::block(
        "connectby running set_config('role') as its relation",
        &["SELECT * FROM connectby('(select set_config(''role'', ''admin_role'', false) as k, ''x''::text as p) s', \
           'k', 'p', 'x', 0) AS t(k text, p text, level int)"],
        Server,
    ),
    Attempt::block(
        "xpath_table running set_config('role') as its relation",
        &["SELECT * FROM xpath_table('k', 'x', \
           '(select set_config(''role'', ''admin_role'', false) as k, ''<a/>''::text as x) s', '/a', 'true') \
           AS t(k text, a text)"],
        Server,
    ),
    Attempt::block(
        "refint check_primary_key trigger whose argument runs set_config('role')",
        &[
            "CREATE TEMP TABLE attack_ref (a int) ON COMMIT DROP",
            "CREATE TRIGGER attack_ref_trg BEFORE INSERT ON attack_ref FOR EACH ROW EXECUTE FUNCTION \
             check_primary_key('a', 'pg_temp.attack_ref; select set_config(''role'', ''admin_role'', false) \
             from (select 1 as a) s', 'a')",
            "INSERT INTO attack_ref VALUES (1)",
        ],
        Server,
    ),
    Attempt::block(
        "SET ROLE through EXECUTE in a function",
        &[
            "CREATE OR REPLACE FUNCTION pg_temp.attack_set_role() RETURNS void LANGUAGE plpgsql \
             AS $$ BEGIN EXECUTE 'SET ROLE ' || 'admin_role'; END $$",
            "SELECT pg_temp.attack_set_role()",
        ],
        Server,
    ),
    Attempt::block(
        "set_config('role') through EXECUTE of a built string",
        &["DO $$ BEGIN EXECUTE format('SELECT set_config(%L, %L, false)', 'ro' || 'le', 'admin_' || 'role'); END $$"],
        Server,
    ),
    Attempt::block(
        "SET ROLE through a SECURITY INVOKER function's SET clause, reading inside",
        &[
            "CREATE OR REPLACE FUNCTION pg_temp.attack_read_as_admin() RETURNS SETOF text LANGUAGE sql \
             SET role = admin_role AS 'SELECT title FROM {docs}'",
            "SELECT pg_temp.attack_read_as_admin()",
        ],
        Server,
    ),
    Attempt::block(
        "SET ROLE admin_role, then write every tenant's rows",
        &[
            "SET ROLE admin_role",
            "UPDATE {docs} SET title = title || ' (seen)' WHERE tenant_id = 2 RETURNING title",
            "DELETE FROM {docs} WHERE tenant_id = 2 RETURNING title",
        ],
        Server,
    ),
    Attempt::block(
        "SET ROLE admin_role, then insert a row for tenant 2",
        &["SET ROLE admin_role", "INSERT INTO {docs} (id, tenant_id, title) VALUES (91, 2, 'planted')"],
        Server,
    ),
    Attempt::block(
        "temp functions shadowing rlsproxy's accessors first on search_path",
        &[
            "CREATE OR REPLACE FUNCTION pg_temp.tenant_id() RETURNS integer LANGUAGE sql AS 'SELECT 2'",
            "CREATE OR REPLACE FUNCTION pg_temp.tenant() RETURNS text LANGUAGE sql AS 'SELECT ''2'''",
            "SET LOCAL search_path = pg_temp, rlsproxy, pg_catalog, public",
            "SELECT tenant_id(), tenant()",
        ],
        Server,
    ),
    Attempt::block(
        "functions and operators shadowing the catalog in a writable schema",
        &[
            "DROP OPERATOR IF EXISTS attack_scratch.= (integer, integer)",
            "DROP OPERATOR IF EXISTS attack_scratch.<> (bytea, bytea)",
            "CREATE OR REPLACE FUNCTION attack_scratch.always(integer, integer) RETURNS boolean \
             LANGUAGE sql AS 'SELECT true'",
            "CREATE OR REPLACE FUNCTION attack_scratch.never(bytea, bytea) RETURNS boolean \
             LANGUAGE sql AS 'SELECT false'",
            "CREATE OPERATOR attack_scratch.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = attack_scratch.always)",
            "CREATE OPERATOR attack_scratch.<> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = attack_scratch.never)",
            "CREATE OR REPLACE FUNCTION attack_scratch.current_setting(text, boolean) RETURNS text \
             LANGUAGE sql AS $$ SELECT '{forged}' $$",
            "CREATE OR REPLACE FUNCTION attack_scratch.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$",
            "SELECT set_config('rlsproxy.signed_context', '{forged}', false)",
            "SET LOCAL search_path = attack_scratch, pg_catalog, public",
            "SELECT rlsproxy.tenant_id(), rlsproxy.verified_context()",
        ],
        Server,
    ),
    Attempt::block(
        "a view over the strict table owned by the attacker",
        &[
            "CREATE OR REPLACE VIEW attack_scratch.every_doc AS SELECT * FROM {docs}",
            "SELECT title FROM attack_scratch.every_doc",
        ],
        Server,
    ),
    Attempt::block(
        "own signed value set again from pg_settings and current_setting",
        &[
            "SELECT set_config('rlsproxy.signed_context', \
             (SELECT setting FROM pg_settings WHERE name = 'rlsproxy.signed_context'), false)",
            "SELECT set_config('rlsproxy.signed_context', current_setting('rlsproxy.signed_context'), false), \
             set_config('app.current_tenant', '2', false)",
        ],
        Server,
    ),
    Attempt::alone(
        "table_to_xml of pg_stat_activity by OID",
        &["SELECT table_to_xml((SELECT oid FROM pg_class WHERE relname = 'pg_stat_' || 'activity')::regclass, \
           true, false, '')"],
        Server,
    ),
    Attempt::alone(
        "the signing keys through every route",
        &[
            "SELECT * FROM rlsproxy_private.keys",
            "SELECT table_to_xml('rlsproxy_private.keys'::regclass, true, false, '')",
            "SELECT * FROM dblink('dbname=app user=rlsproxy_owner', 'select encode(secret, ''hex'') from rlsproxy_private.keys') \
             AS t(s text)",
            "SET ROLE admin_role",
            "SELECT encode(secret, 'hex') FROM rlsproxy_private.keys",
        ],
        Server,
    ),
];
