-- Per-tenant advisory lock keys: the SQL side of what the proxy does.
--
-- Run by a superuser in the application's database (after 0003 when strict
-- mode is used; it works without it):
--   psql -X -v ON_ERROR_STOP=1 -d app -f migrations/0006_advisory_locks.sql
-- Re-runnable: the schema IF NOT EXISTS, functions CREATE OR REPLACE,
-- privileges re-applied.
--
-- Advisory lock keys are database-wide and every tenant's session runs as the
-- proxy's one role, so the proxy gives each tenant its own keys: it rewrites
-- the key of every call of the advisory lock functions in a client's SQL
-- (pg_advisory_lock, pg_try_advisory_xact_lock_shared, pg_advisory_unlock…;
-- not pg_advisory_unlock_all) to
--   one key:  H(T || ':k:' || key::bigint::text)
--   two keys: H(T || ':p:' || key1::integer::text || ',' || key2::integer::text)
-- where T is the hex SHA-256 of the tenant (UTF-8) and H(s) the first 8 bytes
-- of SHA-256(s) as a bigint, and calls the one-bigint function with it. The
-- tags keep the two forms apart; SHA-256, because a tenant chooses its keys
-- and must not be able to aim one at another tenant's.
--
-- Code inside the server (a trigger, a function) gets no rewrite: it takes the
-- tenant's lock with
--   PERFORM pg_advisory_xact_lock(rlsproxy.advisory_key(tenant, 42));
-- (tenant: rlsproxy.tenant() of 0003 in strict mode, else the tenant setting),
-- and a job that connects directly does the same for the tenant it works for.

-- CREATE ... IF NOT EXISTS would print a NOTICE on a re-run.
SET client_min_messages = warning;

BEGIN;

CREATE SCHEMA IF NOT EXISTS rlsproxy;
-- As in 0003: everyone may call the functions; nobody else may create objects here.
REVOKE ALL ON SCHEMA rlsproxy FROM PUBLIC;
GRANT USAGE ON SCHEMA rlsproxy TO PUBLIC;

-- Standard-SQL bodies (as in 0003): names are bound when the functions are
-- created, so no search path changes them.

-- H(s) above.
CREATE OR REPLACE FUNCTION rlsproxy.advisory_hash(s text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN ('x' || encode(substr(sha256(convert_to(s, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint;

-- The server's key of `tenant`'s one-key lock `key` (the proxy computes the same).
CREATE OR REPLACE FUNCTION rlsproxy.advisory_key(tenant text, key bigint)
RETURNS bigint
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN rlsproxy.advisory_hash(encode(sha256(convert_to(tenant, 'UTF8')), 'hex') || ':k:' || key::text);

-- The server's key of `tenant`'s two-key lock (`key1`, `key2`).
CREATE OR REPLACE FUNCTION rlsproxy.advisory_key(tenant text, key1 integer, key2 integer)
RETURNS bigint
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN rlsproxy.advisory_hash(
    encode(sha256(convert_to(tenant, 'UTF8')), 'hex') || ':p:' || key1::text || ',' || key2::text);

-- With 0003 installed, rlsproxy_owner owns everything in the schema: nobody but
-- it and superusers can replace these functions.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rlsproxy_owner') THEN
        ALTER FUNCTION rlsproxy.advisory_hash(text) OWNER TO rlsproxy_owner;
        ALTER FUNCTION rlsproxy.advisory_key(text, bigint) OWNER TO rlsproxy_owner;
        ALTER FUNCTION rlsproxy.advisory_key(text, integer, integer) OWNER TO rlsproxy_owner;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION rlsproxy.advisory_hash(text), rlsproxy.advisory_key(text, bigint),
    rlsproxy.advisory_key(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.advisory_hash(text), rlsproxy.advisory_key(text, bigint),
    rlsproxy.advisory_key(text, integer, integer) TO PUBLIC;

COMMIT;
