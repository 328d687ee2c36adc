-- Strict mode: a tenant context that the database verifies itself.
--
-- Run by a superuser in the application's database, after 0001/0002:
--   psql -X -v ON_ERROR_STOP=1 -d app -f migrations/0003_strict_mode.sql
-- Re-runnable: the role is created only when missing, the schema and the key
-- table IF NOT EXISTS, functions CREATE OR REPLACE, privileges re-applied.
-- It changes no existing table: a table switches to strict policies only when
-- `SELECT rlsproxy.enable_strict_policies('<table>')` is run for it (below).
--
-- Threat model. Policies written as
--   tenant_id = current_setting('app.current_tenant')::integer
-- trust whatever the session says. The proxy's statement guard refuses every
-- known way for a client to change that setting (SET, set_config(...), DO,
-- functions, ...), but a parser-based guard is best effort against SQL that
-- runs SQL: one missed path and a client can run
--   SELECT set_config('app.current_tenant', '2', false)
-- and read tenant 2's rows. Strict mode closes that gap cryptographically: at
-- every transaction start the proxy also sets `rlsproxy.signed_context` to a
-- value signed with HMAC-SHA256 under a key that only the proxy process (its
-- configuration file) and the owner of this schema know. Strict policies call
-- rlsproxy.tenant_id(), which returns the tenant only when the signature
-- verifies with a key of rlsproxy.keys and the value has not expired, else
-- NULL, and `tenant_id = NULL` matches no row. A client may set either setting
-- to anything it likes: it cannot produce another tenant's signed value. What
-- it can do is replay its own value (it can read it with current_setting), and
-- that only ever gives it its own tenant's rows, until `exp`.
--
-- What this relies on:
--   * The proxy's upstream role (app_proxy) cannot read rlsproxy.keys: the table
--     belongs to the NOLOGIN role rlsproxy_owner and nobody else has a privilege
--     on it. The verifying functions read it as their owner (SECURITY DEFINER).
--   * Nobody but rlsproxy_owner (and superusers) can replace these functions:
--     they belong to rlsproxy_owner, and PUBLIC has USAGE but not CREATE on the
--     schema rlsproxy.
--   * The SECURITY DEFINER functions pin `search_path = pg_catalog, pg_temp`, so
--     that no object a client creates (e.g. a temporary table or function
--     shadowing a name) is resolved inside them, and reference every
--     non-catalog object schema-qualified.
--   * The upstream role is no superuser, has no BYPASSRLS and is no member of
--     rlsproxy_owner (rlsproxy checks the first two at start).
--
-- Signed value format, version 1 (`.` separates four fields; none contains `.`):
--   v1.<kid>.<payload>.<mac>
--   kid      the key id, [A-Za-z0-9_-]{1,64}, a row of rlsproxy.keys
--   payload  base64url without padding (RFC 4648 section 5) of a UTF-8 JSON
--            object: {"tenant":"1","role":null,"exp":1795678255}
--              tenant  string, the tenant claim of the client's token
--              role    string or null, the role the proxy set for the client
--              exp     number, unix seconds; valid while now() < exp (now() is
--                      the transaction's start, so a transaction that started
--                      before exp keeps its tenant to its end)
--            other members are allowed and returned by verified_context()
--   mac      base64url without padding of
--              HMAC-SHA256(key = secret of <kid>, data = 'v1.<kid>.<payload>')
--            i.e. over the exact ASCII text that precedes the last `.`; the
--            payload is decoded only after the MAC verified, so it needs no
--            canonical JSON form.
-- Example (key = 32 bytes 0x00..0x1f, kid k1, tenant "1", role null, exp 1795678255):
--   v1.k1.eyJ0ZW5hbnQiOiIxIiwicm9sZSI6bnVsbCwiZXhwIjoxNzk1Njc4MjU1fQ.apz3tO1SnQ1DXMbboKkoVM0-qvoXh2KcdjLLvs33ltM
-- (src/policy/strict.rs signs; its unit tests hold known answers.)
--
-- Keys and rotation. Generate 32 random bytes as hex (`openssl rand -hex 32`),
-- give the same hex to the proxy (its strict key file) and to the database:
--   \set secret `cat k1.hex`
--   INSERT INTO rlsproxy.keys (kid, secret) VALUES ('k1', decode(:'secret', 'hex'));
-- Verification accepts every kid present in the table, the proxy signs with
-- the one kid it is configured with. To rotate without downtime:
--   1. INSERT the new key k2 (k1 and k2 are now both valid);
--   2. configure every proxy with k2 and restart/reload it;
--   3. when no proxy signs with k1 any more and values signed with k1 have
--      expired: DELETE FROM rlsproxy.keys WHERE kid = 'k1';
-- Deleting a key revokes every value signed with it at once (compromise).
--
-- Converting a table (as its owner or a superuser):
--   SELECT rlsproxy.enable_strict_policies('documents');            -- integer tenant_id
--   SELECT rlsproxy.enable_strict_policies('tenants', 'id');
-- It replaces the per-command policies named as in 0001 (tenant_isolation,
-- tenant_isolation_insert, _update, _delete) with strict ones, so 0001's tables
-- convert in place, and leaves role-specific policies such as admin_bypass.

-- CREATE ... IF NOT EXISTS would print a NOTICE per object on a re-run.
SET client_min_messages = warning;

BEGIN;

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Owner of the schema, the keys and the verifying functions. NOLOGIN and no
-- members: nothing can act as it except the SECURITY DEFINER functions below.
-- NOBYPASSRLS, no superuser: it needs nothing but its own objects.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rlsproxy_owner') THEN
        CREATE ROLE rlsproxy_owner NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    ELSE
        ALTER ROLE rlsproxy_owner NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS rlsproxy AUTHORIZATION rlsproxy_owner;
ALTER SCHEMA rlsproxy OWNER TO rlsproxy_owner;
-- Everyone may call the functions (policies run them as the querying role);
-- nobody else may create objects in the schema.
REVOKE ALL ON SCHEMA rlsproxy FROM PUBLIC;
GRANT USAGE ON SCHEMA rlsproxy TO PUBLIC;

-- Signing keys: readable only by rlsproxy_owner (and superusers).
CREATE TABLE IF NOT EXISTS rlsproxy.keys (
    kid        text PRIMARY KEY CONSTRAINT keys_kid_format CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    secret     bytea NOT NULL CONSTRAINT keys_secret_length CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE rlsproxy.keys OWNER TO rlsproxy_owner;
REVOKE ALL ON TABLE rlsproxy.keys FROM PUBLIC;

-- HMAC-SHA256 through pgcrypto, wherever pgcrypto is installed (public by
-- default; another schema when the extension existed before): its schema is
-- looked up now and written into the function, schema-qualified.
DO $$
DECLARE
    ext_schema name := (
        SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pgcrypto'
    );
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO rlsproxy_owner', ext_schema);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.hmac(bytea, bytea, text) TO rlsproxy_owner', ext_schema);
    EXECUTE format(
        $f$CREATE OR REPLACE FUNCTION rlsproxy.hmac_sha256(data bytea, key bytea)
           RETURNS bytea
           LANGUAGE sql
           IMMUTABLE STRICT PARALLEL SAFE
           SET search_path = pg_catalog, pg_temp
           AS 'SELECT %I.hmac(data, key, ''sha256''::text)'$f$,
        ext_schema);
END
$$;
ALTER FUNCTION rlsproxy.hmac_sha256(bytea, bytea) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.hmac_sha256(bytea, bytea) FROM PUBLIC;

-- The verified context: the payload object plus "kid", or NULL when the
-- setting is missing or empty, malformed, signed with an unknown kid, forged or
-- tampered with, or expired. Never raises for anything a client can send; a
-- correctly signed payload that is not UTF-8 JSON (a signer bug, not an
-- attack: it needs the key) raises.
CREATE OR REPLACE FUNCTION rlsproxy.verified_context()
RETURNS jsonb
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    value   text := current_setting('rlsproxy.signed_context', true);
    parts   text[];
    secret  bytea;
    mac     text;
    b64     text;
    payload jsonb;
BEGIN
    -- Shape first, so that nothing below can fail on client input: a MAC of a
    -- SHA-256 is 43 base64url characters.
    IF value IS NULL OR length(value) > 8192
       OR value !~ '^v1\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$' THEN
        RETURN NULL;
    END IF;
    parts := string_to_array(value, '.');

    SELECT k.secret INTO secret FROM rlsproxy.keys AS k WHERE k.kid = parts[2];
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    mac := rtrim(translate(encode(
        rlsproxy.hmac_sha256(convert_to(parts[1] || '.' || parts[2] || '.' || parts[3], 'UTF8'), secret),
        'base64'), '+/', '-_'), '=');
    -- Compared through a second HMAC under the same key, so that the time the
    -- comparison takes says nothing about how many leading characters of a
    -- guessed MAC were right.
    IF rlsproxy.hmac_sha256(convert_to(mac, 'UTF8'), secret)
       <> rlsproxy.hmac_sha256(convert_to(parts[4], 'UTF8'), secret) THEN
        RETURN NULL;
    END IF;

    -- Authentic from here on. base64url -> base64 with padding.
    b64 := translate(parts[3], '-_', '+/');
    IF mod(length(b64), 4) = 1 THEN
        RETURN NULL;
    END IF;
    b64 := rpad(b64, ((length(b64) + 3) / 4) * 4, '=');
    payload := convert_from(decode(b64, 'base64'), 'UTF8')::jsonb;

    IF jsonb_typeof(payload) IS DISTINCT FROM 'object'
       OR jsonb_typeof(payload -> 'tenant') IS DISTINCT FROM 'string'
       OR jsonb_typeof(payload -> 'exp') IS DISTINCT FROM 'number'
       OR jsonb_typeof(payload -> 'role') NOT IN ('string', 'null') THEN
        RETURN NULL;
    END IF;
    IF (payload ->> 'exp')::numeric <= extract(epoch FROM now()) THEN
        RETURN NULL;
    END IF;
    RETURN payload || jsonb_build_object('kid', parts[2]);
END
$fn$;

-- The verified tenant as text (tenant claims that are not integers).
CREATE OR REPLACE FUNCTION rlsproxy.tenant()
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT rlsproxy.verified_context() ->> 'tenant'
$fn$;

-- The verified tenant as integer; NULL also when it is not an int4.
CREATE OR REPLACE FUNCTION rlsproxy.tenant_id()
RETURNS integer
LANGUAGE sql
STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
               WHEN t IS NULL OR t !~ '^-?[0-9]{1,10}$' THEN NULL
               WHEN t::bigint BETWEEN -2147483648 AND 2147483647 THEN t::integer
           END
    FROM (SELECT rlsproxy.verified_context() ->> 'tenant' AS t) AS ctx
$fn$;

-- The verified role claim (NULL when none, or when the context is not valid).
CREATE OR REPLACE FUNCTION rlsproxy.role()
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT rlsproxy.verified_context() ->> 'role'
$fn$;

ALTER FUNCTION rlsproxy.verified_context() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.tenant() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.tenant_id() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.role() OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.verified_context(), rlsproxy.tenant(), rlsproxy.tenant_id(), rlsproxy.role()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.verified_context(), rlsproxy.tenant(), rlsproxy.tenant_id(), rlsproxy.role()
    TO PUBLIC;

-- (Re)creates the per-command strict policies of a table and turns on (and
-- forces) row-level security. The tenant column may be an integer type
-- (compared with tenant_id()) or text/varchar (compared with tenant()). The
-- wrapped form `(SELECT rlsproxy.tenant_id())` is an InitPlan: verified once
-- per statement, not once per row.
-- SECURITY INVOKER: it can do only what its caller (the table's owner, or a
-- superuser) could do anyway; EXECUTE is not granted to PUBLIC.
-- Permissive policies are OR-ed: another permissive policy for PUBLIC on the
-- same table (e.g. one on app.current_tenant under another name) would let
-- rows through whatever the signed context says, so they are reported with a
-- WARNING (drop them). Policies for specific roles (admin_bypass) are kept.
CREATE OR REPLACE FUNCTION rlsproxy.enable_strict_policies(tbl regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    col_type regtype;
    same     text;
    old      name;
    others   text;
BEGIN
    SELECT a.atttypid::regtype INTO col_type
    FROM pg_attribute AS a
    WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', tenant_column, tbl
            USING ERRCODE = 'undefined_column';
    END IF;
    IF col_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        same := format('%I = (SELECT rlsproxy.tenant_id())', tenant_column);
    ELSIF col_type IN ('text'::regtype, 'character varying'::regtype) THEN
        same := format('%I = (SELECT rlsproxy.tenant())', tenant_column);
    ELSE
        RAISE EXCEPTION 'tenant column "%" of % has type %, expected an integer type, text or varchar',
            tenant_column, tbl, col_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    -- tbl::text is schema-qualified here (search_path holds no user schema).
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    -- Dropped only when present: DROP POLICY IF EXISTS would print a NOTICE each.
    FOR old IN
        SELECT p.polname FROM pg_policy AS p
        WHERE p.polrelid = tbl AND p.polname IN ('tenant_isolation', 'tenant_isolation_insert',
                                                 'tenant_isolation_update', 'tenant_isolation_delete')
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', old, tbl);
    END LOOP;
    EXECUTE format('CREATE POLICY tenant_isolation ON %s FOR SELECT USING (%s)', tbl, same);
    EXECUTE format('CREATE POLICY tenant_isolation_insert ON %s FOR INSERT WITH CHECK (%s)', tbl, same);
    EXECUTE format('CREATE POLICY tenant_isolation_update ON %s FOR UPDATE USING (%s) WITH CHECK (%s)',
                   tbl, same, same);
    EXECUTE format('CREATE POLICY tenant_isolation_delete ON %s FOR DELETE USING (%s)', tbl, same);

    SELECT string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname) INTO others
    FROM pg_policy AS p
    WHERE p.polrelid = tbl AND p.polpermissive AND 0 = ANY (p.polroles)
      AND p.polname NOT IN ('tenant_isolation', 'tenant_isolation_insert',
                            'tenant_isolation_update', 'tenant_isolation_delete');
    IF others IS NOT NULL THEN
        RAISE WARNING 'other permissive policies for PUBLIC on %: %', tbl, others
            USING HINT = 'Permissive policies are OR-ed: drop them, or rows pass without a signed context.';
    END IF;
END
$fn$;

ALTER FUNCTION rlsproxy.enable_strict_policies(regclass, name) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.enable_strict_policies(regclass, name) FROM PUBLIC;

-- The invariant this file exists for: nobody but the owner holds a privilege
-- on the keys. A grant made by hand since is reported, not silently kept.
DO $$
DECLARE
    grantees text;
BEGIN
    SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ', ')
    INTO grantees
    FROM pg_class AS c, aclexplode(c.relacl) AS a
    WHERE c.oid = 'rlsproxy.keys'::regclass AND a.grantee <> c.relowner;
    IF grantees IS NOT NULL THEN
        RAISE WARNING 'rlsproxy.keys is readable by % besides its owner', grantees
            USING HINT = 'REVOKE ALL ON rlsproxy.keys FROM ...: the proxy''s role must never read the keys.';
    END IF;
END
$$;

COMMIT;
