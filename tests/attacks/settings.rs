//! Attempts on the context itself: SET / RESET of the tenant and signed settings in every
//! spelling, `set_config` wherever an expression may stand, and the role.

use crate::Attempt;
use crate::Expect::{self, Guard, Reserved};

const SET: Expect = Guard(&["set_protected"]);
const SET_CONFIG: Expect = Guard(&["set_config"]);
const ALTER: Expect = Guard(&["alter_settings"]);

/// The attempts of this file.
pub const ATTEMPTS: &[Attempt] = &[
    // SET / RESET of the tenant setting.
    Attempt::block("SET app.current_tenant", &["SET app.current_tenant = 2"], SET),
    Attempt::block("SET SESSION app.current_tenant", &["SET SESSION app.current_tenant TO '2'"], SET),
    Attempt::block("SET LOCAL app.current_tenant", &["SET LOCAL app.current_tenant = '2'"], SET),
    Attempt::block("SET with quoted parts", &["SET \"app\".\"current_tenant\" = 2"], SET),
    Attempt::block("SET upper-case quoted name", &["SET \"APP.CURRENT_TENANT\" = 2"], SET),
    Attempt::block("SET U&-escaped name", &["SET app.U&\"current\\005Ftenant\" = 2"], SET),
    Attempt::block("SET U&-escaped name with UESCAPE", &["SET U&\"app.current!005Ftenant\" UESCAPE '!' = 2"], SET),
    Attempt::block("SET with comments and odd whitespace", &["SET/**/app\t.\n current_tenant/* x */=--c\n'2'"], SET),
    Attempt::alone("SET and a read in one Query", &["SET LOCAL app.current_tenant = 2; SELECT title FROM {docs}"], SET),
    Attempt::block("RESET app.current_tenant", &["RESET app.current_tenant"], SET),
    Attempt::block("RESET ALL", &["RESET ALL"], Guard(&["reset_all"])),
    // Alone as a Query it runs (drivers reset with it) and the proxy injects again after
    // it; as a Parse it is refused. Either way the probe then sees tenant 1's context.
    Attempt::alone("DISCARD ALL", &["DISCARD ALL"], Expect::Server),
    Attempt::block("DISCARD TEMP in a block", &["DISCARD TEMP"], Guard(&["discard"])),
    Attempt::block("SET the signed context to a forged value", &["SET rlsproxy.signed_context = '{forged}'"], SET),
    // set_config, in every place an expression may stand.
    Attempt::block(
        "set_config in the select list",
        &["SELECT set_config('app.current_tenant', '2', false), title FROM {docs}"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in WHERE",
        &["SELECT title FROM {docs} WHERE set_config('app.current_tenant', '2', false) IS NOT NULL"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in LIMIT",
        &["SELECT title FROM {docs} LIMIT length(set_config('app.current_tenant', '2', false)) + 9"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in a scalar subquery",
        &["SELECT title FROM {docs} WHERE (SELECT set_config('app.current_tenant', '2', false)) = '2'"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in a CTE",
        &["WITH s AS MATERIALIZED (SELECT set_config('app.current_tenant', '2', false)) SELECT title FROM s, {docs}"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in VALUES",
        &["SELECT title FROM (VALUES (set_config('app.current_tenant', '2', false))) v(x), {docs}"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in RETURNING",
        &["UPDATE {docs} SET title = title WHERE id = 1 RETURNING set_config('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in a DEFAULT expression",
        &[
            "CREATE TEMP TABLE attack_default (t text DEFAULT set_config('app.current_tenant', '2', false))",
            "INSERT INTO attack_default DEFAULT VALUES",
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in a CHECK constraint of a temp table",
        &[
            "CREATE TEMP TABLE attack_check (t text CHECK (set_config('app.current_tenant', t, false) IS NOT NULL))",
            "INSERT INTO attack_check VALUES ('2')",
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config in ORDER BY",
        &["SELECT title FROM {docs} ORDER BY set_config('app.current_tenant', '2', false), id"],
        SET_CONFIG,
    ),
    Attempt::block(
        "pg_catalog.set_config",
        &["SELECT pg_catalog.set_config('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "upper-case PG_CATALOG.SET_CONFIG",
        &["SELECT PG_CATALOG.SET_CONFIG('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "quoted \"pg_catalog\".\"set_config\"",
        &["SELECT \"pg_catalog\".\"set_config\"('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "U&-escaped set_config",
        &["SELECT U&\"\\0073et_config\"('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "U&-escaped set_config with UESCAPE",
        &["SELECT U&\"!0073et!005Fconfig\" UESCAPE '!' ('app.current_tenant', '2', false)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config local to the transaction",
        &["SELECT set_config('app.current_tenant', '2', true)"],
        SET_CONFIG,
    ),
    Attempt::block(
        "set_config between comments and odd whitespace",
        &["SELECT/**/set_config/* x */\n\t(\n'app.current_tenant' -- c\n, '2',\x0Cfalse)"],
        SET_CONFIG,
    ),
    Attempt::alone(
        "set_config after a harmless statement",
        &["SELECT 1; SELECT set_config('app.current_tenant', '2', false); SELECT title FROM {docs}"],
        SET_CONFIG,
    ),
    Attempt::alone(
        "SET hidden after a read in one Query",
        &["SELECT title FROM {docs}; SET app.current_tenant = 2; SELECT title FROM {docs}"],
        SET,
    ),
    Attempt::block(
        "set_config of the signed context",
        &["SELECT set_config('rlsproxy.signed_context', '{forged}', false)"],
        SET_CONFIG,
    ),
    // The role.
    Attempt::block("SET ROLE admin_role", &["SET ROLE admin_role"], SET),
    Attempt::block("SET LOCAL ROLE admin_role", &["SET LOCAL ROLE admin_role"], SET),
    Attempt::block("SET \"role\" as a setting", &["SET \"role\" = 'admin_role'"], SET),
    Attempt::block("SET role via set_config", &["SELECT set_config('role', 'admin_role', false)"], SET_CONFIG),
    Attempt::block("RESET ROLE", &["RESET ROLE"], SET),
    Attempt::block("SET SESSION AUTHORIZATION", &["SET SESSION AUTHORIZATION postgres"], SET),
    Attempt::block("RESET SESSION AUTHORIZATION", &["RESET SESSION AUTHORIZATION"], SET),
    Attempt::alone("ALTER ROLE SET the tenant", &["ALTER ROLE app_proxy SET app.current_tenant = '2'"], ALTER),
    Attempt::alone("ALTER ROLE SET role", &["ALTER ROLE app_proxy SET role = 'admin_role'"], ALTER),
    Attempt::alone(
        "ALTER ROLE IN DATABASE SET the tenant",
        &["ALTER ROLE app_proxy IN DATABASE app SET app.current_tenant = '2'"],
        ALTER,
    ),
    Attempt::alone("ALTER DATABASE SET the tenant", &["ALTER DATABASE app SET app.current_tenant = '2'"], ALTER),
    Attempt::alone("ALTER SYSTEM SET the tenant", &["ALTER SYSTEM SET app.current_tenant = '2'"], ALTER),
    // The proxy's own injection statement, by SQL.
    Attempt::block("SQL EXECUTE rlsproxy_ctx with tenant 2", &["EXECUTE rlsproxy_ctx({ctx_args})"], Reserved),
    Attempt::block(
        "SQL EXECUTE of a U&-escaped rlsproxy_ctx",
        &["EXECUTE U&\"rlsproxy\\005Fctx\"({ctx_args})"],
        Reserved,
    ),
    Attempt::block(
        "SQL EXECUTE of a U&-escaped rlsproxy_ctx with UESCAPE",
        &["EXECUTE U&\"rlsproxy!005Fctx\" UESCAPE '!' ({ctx_args})"],
        Reserved,
    ),
    Attempt::alone("DEALLOCATE rlsproxy_ctx", &["DEALLOCATE rlsproxy_ctx"], Reserved),
    Attempt::alone("PREPARE rlsproxy_ctx", &["PREPARE rlsproxy_ctx (text, text) AS SELECT $1, $2"], Reserved),
    Attempt::alone(
        "replace a U&-escaped rlsproxy_ctx by a no-op",
        &["DEALLOCATE U&\"rlsproxy\\005Fctx\"", "PREPARE U&\"rlsproxy\\005Fctx\" (text, text) AS SELECT $1, $2"],
        Reserved,
    ),
    Attempt::block(
        "shadow rlsproxy_refused, then get refused",
        &["PREPARE U&\"rlsproxy\\005Frefused\" AS SELECT 1", "SET app.current_tenant = 2"],
        Reserved,
    ),
];
