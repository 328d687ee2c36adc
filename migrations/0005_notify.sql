-- Per-tenant LISTEN/NOTIFY channels: the SQL side of what the proxy does.
--
-- Run by a superuser in the application's database (after 0003 when strict
-- mode is used; it works without it):
--   psql -X -v ON_ERROR_STOP=1 -d app -f migrations/0005_notify.sql
-- Re-runnable: the schema IF NOT EXISTS, functions CREATE OR REPLACE,
-- privileges re-applied.
--
-- Channels are database-wide and every tenant's session runs as the proxy's one
-- role, so the proxy gives each tenant its own channel namespace: it rewrites
-- the channel of a client's LISTEN, UNLISTEN and NOTIFY (and the constant
-- channel of pg_notify('chan', …)) to
--   <first 16 hex digits of SHA-256(tenant, UTF-8)>.<channel>
-- and delivers a notification to a client only when its channel starts with
-- the client's own prefix, which it removes. The prefix has a fixed length, so
-- two tenants' names never collide (short of a 64-bit hash collision), and a
-- channel may have at most 63 - 17 = 46 bytes (the proxy refuses longer ones
-- with 42622 instead of letting the server truncate the name).
--
-- A trigger runs inside the server, where the proxy rewrites nothing: a trigger
-- that calls pg_notify('documents', …) notifies a channel no proxied client can
-- listen to. It calls rlsproxy.notify('documents', …) instead, which notifies
-- the current tenant's listeners of the channel `documents`:
--   CREATE FUNCTION documents_changed() RETURNS trigger LANGUAGE plpgsql AS $$
--   BEGIN
--       PERFORM rlsproxy.notify('documents', NEW.id::text);
--       RETURN NEW;
--   END $$;
-- Jobs that connect directly (not through the proxy) notify a tenant with
--   SELECT pg_notify(rlsproxy.channel('42', 'documents'), 'payload');
--
-- What rlsproxy.notify trusts: the tenant of the current transaction as the
-- proxy injected it. With strict mode (a signed value in
-- rlsproxy.signed_context) only the verified tenant (rlsproxy.tenant() of
-- 0003) counts, never the plain setting; a value that does not verify notifies
-- nobody. Without a tenant nothing is notified. It never does more than the
-- session could do itself with NOTIFY: a client that can run arbitrary SQL
-- (the guard off) can send to any channel with NOTIFY in a DO block, but the
-- proxy never delivers another tenant's notification to it.
--
-- The tenant setting is read as `app.current_tenant` (the proxy's default
-- [context] tenant_setting): change it below if yours differs.

-- CREATE ... IF NOT EXISTS would print a NOTICE on a re-run.
SET client_min_messages = warning;

BEGIN;

CREATE SCHEMA IF NOT EXISTS rlsproxy;
-- As in 0003: everyone may call the functions; nobody else may create objects here.
REVOKE ALL ON SCHEMA rlsproxy FROM PUBLIC;
GRANT USAGE ON SCHEMA rlsproxy TO PUBLIC;

-- The server's name of `tenant`'s channel `channel` (the proxy computes the same).
CREATE OR REPLACE FUNCTION rlsproxy.channel(tenant text, channel text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF octet_length(channel) > 46 THEN
        RAISE EXCEPTION 'the channel name "%" is too long: at most 46 bytes', channel
            USING ERRCODE = '42622';
    END IF;
    RETURN substr(encode(sha256(convert_to(tenant, 'UTF8')), 'hex'), 1, 16) || '.' || channel;
END
$fn$;

-- pg_notify for the current tenant's listeners of `channel` (see above).
CREATE OR REPLACE FUNCTION rlsproxy.notify(channel text, payload text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenant text;
BEGIN
    IF coalesce(current_setting('rlsproxy.signed_context', true), '') <> '' THEN
        tenant := rlsproxy.tenant();
    ELSE
        tenant := nullif(current_setting('app.current_tenant', true), '');
    END IF;
    IF tenant IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify(rlsproxy.channel(tenant, channel), payload);
    END IF;
END
$fn$;

-- With 0003 installed, rlsproxy_owner owns everything in the schema: nobody but
-- it and superusers can replace these functions (they are SECURITY INVOKER, so
-- the owner grants them nothing).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rlsproxy_owner') THEN
        ALTER FUNCTION rlsproxy.channel(text, text) OWNER TO rlsproxy_owner;
        ALTER FUNCTION rlsproxy.notify(text, text) OWNER TO rlsproxy_owner;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION rlsproxy.channel(text, text), rlsproxy.notify(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.channel(text, text), rlsproxy.notify(text, text) TO PUBLIC;

COMMIT;
