-- Strict mode: a tenant context that the database verifies itself.
--
-- Run by a superuser in the application's database, after 0001/0002:
--   psql -X -v ON_ERROR_STOP=1 -d app -f migrations/0003_strict_mode.sql
-- Re-runnable: the role is created only when missing, the schema and the key
-- table IF NOT EXISTS, functions CREATE OR REPLACE, privileges re-applied;
-- it upgrades an install of an earlier version of this file in place (then run
-- enable_strict_policies again for each strict table, to bind its role
-- policies). Needs PostgreSQL 14 or later (standard-SQL function bodies).
-- Upgrading: apply this file before running a proxy of the same version (its
-- injection calls rlsproxy.admit; without it every transaction fails closed).
-- On a live database a re-run that changes nothing locks nothing tenants use;
-- one that must alter the key table or the sequences fails after lock_timeout
-- (set below) instead of stalling every tenant: run it again.
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
-- verifies with a key of rlsproxy_private.keys and the value has not expired, else
-- NULL, and `tenant_id = NULL` matches no row. A client may set either setting
-- to anything it likes: it cannot produce another tenant's signed value. What
-- it can do is replay its own value (it can read it with current_setting), and
-- that only ever gives it its own tenant's rows, until `exp`.
--
-- What this relies on:
--   * The proxy's upstream role (app_proxy) cannot read rlsproxy_private.keys: the table
--     belongs to the NOLOGIN role rlsproxy_owner and nobody else has a privilege
--     on it. The verifying function rlsproxy.verify() reads it as its owner
--     (SECURITY DEFINER), and so does rlsproxy.record_admission(), which records
--     what it verified (see "Admissions" below); context(), tenant_id(),
--     tenant(), role() and verified_context() are accessors over both.
--   * app_proxy cannot set the sequences admissions are recorded in: they
--     belong to rlsproxy_owner in rlsproxy_private, PUBLIC may only read them
--     (by OID, through functions bound when created), and nobody else may name
--     them (so nobody can queue a lock request on them).
--   * Nobody but rlsproxy_owner (and superusers) can replace these functions:
--     they belong to rlsproxy_owner, and PUBLIC has USAGE but not CREATE on the
--     schema rlsproxy.
--   * The PL/pgSQL functions pin `search_path = pg_catalog, pg_temp` (but
--     tenant_id(), which schema-qualifies every name and operator instead) and
--     the SQL ones have standard-SQL bodies (names bound when created), so that
--     no object a client creates (e.g. a temporary table, function or operator
--     shadowing a name) is resolved inside them; every non-catalog object is
--     referenced schema-qualified.
--   * The upstream role is no superuser, has no BYPASSRLS and is no member of
--     rlsproxy_owner (rlsproxy checks the first two at start).
--
-- Signed value format, version 1 (`.` separates four fields; none contains `.`):
--   v1.<kid>.<payload>.<mac>
--   kid      the key id, [A-Za-z0-9_-]{1,64}, a row of rlsproxy_private.keys
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
--   INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('k1', decode(:'secret', 'hex'));
-- Verification accepts every kid present in the table, the proxy signs with
-- the one kid it is configured with. To rotate without downtime:
--   1. INSERT the new key k2 (k1 and k2 are now both valid);
--   2. configure every proxy with k2 and restart/reload it;
--   3. when no proxy signs with k1 any more and values signed with k1 have
--      expired: DELETE FROM rlsproxy_private.keys WHERE kid = 'k1';
-- Deleting a key revokes every value signed with it at once (compromise).
--
-- Converting a table (as its owner or a superuser):
--   SELECT rlsproxy.enable_strict_policies('documents');            -- integer tenant_id
--   SELECT rlsproxy.enable_strict_policies('tenants', 'id');
-- It replaces the per-command policies named as in 0001 (tenant_isolation,
-- tenant_isolation_insert, _update, _delete) with strict ones, so 0001's tables
-- convert in place, and binds role-specific policies such as admin_bypass to
-- the signed role: `TO admin_role` then also needs a value signed with role
-- admin_role, so a client that reaches `SET ROLE admin_role` by itself gains
-- nothing.

-- CREATE ... IF NOT EXISTS would print a NOTICE per object on a re-run.
SET client_min_messages = warning;
-- A re-run on a live database changes nothing and takes no lock a tenant's
-- statement waits for (the ALTERs below run only when something differs). A
-- change that does need a strong lock gives up after this instead of queueing
-- every tenant behind a transaction left open: run the file again then.
SET lock_timeout = '10s';

BEGIN;

-- Owner of the schema, the keys and the verifying function. NOLOGIN and no
-- members: nothing can act as it except the SECURITY DEFINER function below.
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

-- HMAC's padded key (RFC 2104): the key (hashed first when longer than the
-- 64-byte block), zero-padded to 64 bytes, each byte XOR `pad` (0x36 inner,
-- 0x5c outer). Precomputed per key below, so that verifying costs two SHA-256
-- of the built-in sha256() and no key schedule. A standard-SQL body is bound
-- when created: no name in it is looked up at run time.
CREATE OR REPLACE FUNCTION rlsproxy.hmac_pad(key bytea, pad integer)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT string_agg(set_byte('\x00'::bytea, 0,
                               (CASE WHEN i < octet_length(k.k) THEN get_byte(k.k, i) ELSE 0 END) # pad),
                      ''::bytea ORDER BY i)
    FROM (SELECT CASE WHEN octet_length(key) > 64 THEN sha256(key) ELSE key END AS k) AS k,
         generate_series(0, 63) AS i;
END;
ALTER FUNCTION rlsproxy.hmac_pad(bytea, integer) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.hmac_pad(bytea, integer) FROM PUBLIC;

-- The keys live in a schema of their own that no other role may use: a role
-- that can name a table can make PostgreSQL lock it (PREPARE of a DELETE,
-- CREATE TRIGGER: locked before privileges are checked), and a lock request
-- queued behind another's would hold off a revocation's DELETE. Earlier
-- versions kept them in rlsproxy, which every role may use: moved here.
CREATE SCHEMA IF NOT EXISTS rlsproxy_private AUTHORIZATION rlsproxy_owner;
ALTER SCHEMA rlsproxy_private OWNER TO rlsproxy_owner;
REVOKE ALL ON SCHEMA rlsproxy_private FROM PUBLIC;
DO $$
BEGIN
    IF to_regclass('rlsproxy.keys') IS NOT NULL AND to_regclass('rlsproxy_private.keys') IS NULL THEN
        ALTER TABLE rlsproxy.keys SET SCHEMA rlsproxy_private;
    END IF;
END
$$;

-- Signing keys: readable only by rlsproxy_owner (and superusers). The padded
-- keys are derived from the secret (generated columns: always consistent).
CREATE TABLE IF NOT EXISTS rlsproxy_private.keys (
    kid        text PRIMARY KEY CONSTRAINT keys_kid_format CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    secret     bytea NOT NULL CONSTRAINT keys_secret_length CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Each ALTER only when needed: even an ALTER that changes nothing locks the table
-- against every admission.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'rlsproxy_private.keys'::regclass
                   AND attname = 'outer_pad' AND NOT attisdropped) THEN
        ALTER TABLE rlsproxy_private.keys
            ADD COLUMN IF NOT EXISTS inner_pad bytea GENERATED ALWAYS AS (rlsproxy.hmac_pad(secret, 54)) STORED,
            ADD COLUMN IF NOT EXISTS outer_pad bytea GENERATED ALWAYS AS (rlsproxy.hmac_pad(secret, 92)) STORED;
    END IF;
    IF (SELECT relowner FROM pg_class WHERE oid = 'rlsproxy_private.keys'::regclass) <> 'rlsproxy_owner'::regrole THEN
        ALTER TABLE rlsproxy_private.keys OWNER TO rlsproxy_owner;
    END IF;
END
$$;
REVOKE ALL ON TABLE rlsproxy_private.keys FROM PUBLIC;

-- Earlier versions of this file computed HMACs with pgcrypto through this.
DROP FUNCTION IF EXISTS rlsproxy.hmac_sha256(bytea, bytea);

-- The payload of a value of the right shape: base64url -> base64 with padding,
-- decoded, as JSON.
CREATE OR REPLACE FUNCTION rlsproxy.payload_of(value text)
RETURNS json
LANGUAGE sql
STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT convert_from(decode(rpad(translate(split_part(value, '.', 3), '-_', '+/'),
                                    (length(split_part(value, '.', 3)) + 3) / 4 * 4, '='), 'base64'), 'UTF8')::json;
END;

-- A tenant as int4, NULL when it is not one.
CREATE OR REPLACE FUNCTION rlsproxy.int4_or_null(tenant text)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN tenant ~ '^-?[0-9]{1,10}$' AND tenant::bigint BETWEEN -2147483648 AND 2147483647
                THEN tenant::integer END;
END;
ALTER FUNCTION rlsproxy.payload_of(text) OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.int4_or_null(text) OWNER TO rlsproxy_owner;

-- Verifies a signed value: one row of the tenant, the tenant as int4 (NULL
-- when it is not one), the role claim, the key id and the payload; all NULL
-- when the value is missing or empty, malformed, signed with an unknown kid,
-- forged or tampered with, or expired. Never raises for anything a client can
-- send; a correctly signed payload that is not UTF-8 JSON (a signer bug, not an
-- attack: it needs the key) raises.
--
-- SECURITY DEFINER: it reads the keys. Cost: one HMAC with the built-in
-- sha256() from the precomputed padded keys, one key lookup whose plan PL/pgSQL
-- keeps for the session (a LANGUAGE sql body is planned again in every
-- statement: measured 4 times slower), no regex over the fields. Policies do
-- not call it for every statement: see the admissions below. `SET search_path`
-- pins name resolution: PL/pgSQL resolves names when it plans, in whatever
-- search_path the caller set, and a client may create operators or temporary
-- objects of its own.
CREATE OR REPLACE FUNCTION rlsproxy.verify(
    value text, OUT tenant text, OUT tenant_id integer, OUT role text, OUT kid text, OUT payload json)
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    parts text[] := string_to_array(value, '.');
    key   record;
BEGIN
    -- Shape first, so that nothing below can fail on client input: `v1.` and
    -- base64url characters in four fields, the last a MAC of a SHA-256 (43
    -- characters). Being ASCII without backslashes, `::bytea` takes the text's
    -- bytes as they are.
    IF length(value) > 8192 OR value !~ '^v1\.[-.0-9A-Z_a-z]*$' OR cardinality(parts) <> 4
       OR length(parts[4]) <> 43 THEN
        RETURN;
    END IF;
    SELECT k.inner_pad, k.outer_pad INTO key FROM rlsproxy_private.keys AS k WHERE k.kid = parts[2];
    -- HMAC-SHA256 over the text before the last '.' (the last 44 characters are
    -- '.' and the MAC). The MACs are compared through their SHA-256, so that the
    -- time the comparison takes says nothing about how many leading characters
    -- of a guessed MAC were right.
    IF NOT FOUND OR sha256(parts[4]::bytea) <> sha256(rtrim(translate(encode(
           sha256(key.outer_pad || sha256(key.inner_pad || left(value, -44)::bytea)),
           'base64'), '+/', '-_'), '=')::bytea) THEN
        RETURN;
    END IF;

    -- Authentic from here on.
    payload := rlsproxy.payload_of(value);
    IF json_typeof(payload -> 'tenant') = 'string' AND json_typeof(payload -> 'exp') = 'number'
       AND json_typeof(payload -> 'role') IN ('string', 'null')
       AND (payload ->> 'exp')::numeric > extract(epoch FROM now()) THEN
        tenant := payload ->> 'tenant';
        tenant_id := rlsproxy.int4_or_null(tenant);
        role := payload ->> 'role';
        kid := parts[2];
    ELSE
        payload := NULL;
    END IF;
END
$fn$;
ALTER FUNCTION rlsproxy.verify(text) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.verify(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.verify(text) TO PUBLIC;

-- Admissions: what makes strict policies cheap. Verifying costs tens of
-- microseconds, and policies would pay it in every statement; but a server
-- connection of the proxy carries one signed value for many transactions. So
-- the proxy admits the value it sets (rlsproxy.admit, forced, whenever a
-- connection takes a context, and every few seconds while it keeps one):
-- admitting verifies the value once and records, in this session's currval()
-- of three sequences, its admission key (128 bits of SHA-256 over the value and
-- the keys' epoch) and its expiry and int4 tenant (masked with 64 more bits
-- of the same SHA-256, so that only a session holding the value can read
-- them). Only the sequences' owner
-- can set them: app_proxy may read them (currval) but not call nextval or
-- setval, so SQL that a client runs cannot record an admission of a value that
-- did not verify. A value whose admission key is the recorded one is trusted
-- without an HMAC or a key lookup.
-- The marker setting `rlsproxy.admitted` (backend pid and the keys' epoch)
-- says whether the sequences were set in this session, as reading them before
-- is an error, and under which keys (an unforced admit compares just the
-- marker). A client may set
-- the marker to anything: at worst its own statements fail (after a DISCARD
-- SEQUENCES) or take the slow way. A parallel worker has a pid of its own: it
-- takes the slow way.
-- Every change to rlsproxy_private.keys moves the epoch at once (a sequence does not
-- wait for commit), which changes every admission key: deleting a key revokes
-- its admitted values as it revokes the others.
-- The sequences live in rlsproxy_private, which no other role may use, for the
-- reason the keys do: a role that can name a relation can make PostgreSQL queue
-- a lock request on it (CREATE RULE, CREATE TRIGGER lock before they check
-- ownership), and every strict statement reads these, so a request queued
-- behind an open transaction would stall every tenant and hold off revocation.
-- Policies reach them only through functions bound when created (below), by
-- OID: currval() checks the sequence's privilege, not the schema's. Earlier
-- versions kept them in rlsproxy: moved here.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['keys_epoch', 'admitted_hi', 'admitted_lo', 'admitted_tenant_id'] LOOP
        IF to_regclass('rlsproxy.' || name) IS NOT NULL AND to_regclass('rlsproxy_private.' || name) IS NULL THEN
            EXECUTE format('ALTER SEQUENCE rlsproxy.%I SET SCHEMA rlsproxy_private', name);
        END IF;
    END LOOP;
END
$$;
CREATE SEQUENCE IF NOT EXISTS rlsproxy_private.keys_epoch;
CREATE SEQUENCE IF NOT EXISTS rlsproxy_private.admitted_hi AS bigint MINVALUE -9223372036854775808;
CREATE SEQUENCE IF NOT EXISTS rlsproxy_private.admitted_lo AS bigint MINVALUE -9223372036854775808;
-- expiry (unix seconds, 32 bits unsigned: until 2106) << 32 | tenant_id (its 32
-- bits); expiry 0 when the tenant is not an int4; XOR the admission key's mask.
CREATE SEQUENCE IF NOT EXISTS rlsproxy_private.admitted_tenant_id AS bigint MINVALUE -9223372036854775808;
DO $$
DECLARE
    seq regclass;
BEGIN
    FOREACH seq IN ARRAY ARRAY['rlsproxy_private.keys_epoch', 'rlsproxy_private.admitted_hi',
                               'rlsproxy_private.admitted_lo', 'rlsproxy_private.admitted_tenant_id']::regclass[] LOOP
        IF (SELECT relowner FROM pg_class WHERE oid = seq) <> 'rlsproxy_owner'::regrole THEN
            EXECUTE format('ALTER SEQUENCE %s OWNER TO rlsproxy_owner', seq);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON SEQUENCE rlsproxy_private.keys_epoch, rlsproxy_private.admitted_hi, rlsproxy_private.admitted_lo,
    rlsproxy_private.admitted_tenant_id FROM PUBLIC;
GRANT SELECT ON SEQUENCE rlsproxy_private.keys_epoch, rlsproxy_private.admitted_hi, rlsproxy_private.admitted_lo,
    rlsproxy_private.admitted_tenant_id TO PUBLIC;

-- This session's records (currval), for tenant_id(), whose PL/pgSQL would look the
-- names up as the caller: these bodies were bound when created. The planner inlines them.
CREATE OR REPLACE FUNCTION rlsproxy.admitted_hi()
RETURNS bigint
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT currval('rlsproxy_private.admitted_hi'::regclass);
END;
CREATE OR REPLACE FUNCTION rlsproxy.admitted_lo()
RETURNS bigint
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT currval('rlsproxy_private.admitted_lo'::regclass);
END;
CREATE OR REPLACE FUNCTION rlsproxy.admitted_tenant()
RETURNS bigint
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT currval('rlsproxy_private.admitted_tenant_id'::regclass);
END;
ALTER FUNCTION rlsproxy.admitted_hi() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.admitted_lo() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.admitted_tenant() OWNER TO rlsproxy_owner;

-- Runs as whoever changes the keys (their owner or a superuser).
CREATE OR REPLACE FUNCTION rlsproxy.keys_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM nextval('rlsproxy_private.keys_epoch');
    RETURN NULL;
END
$fn$;
ALTER FUNCTION rlsproxy.keys_changed() OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.keys_changed() FROM PUBLIC;
-- keys_changed: by statement. keys_changed_row: logical replication's apply fires
-- row triggers only, never statement ones, so a key deleted on a subscriber moves
-- the epoch through this one. Both ENABLE ALWAYS: also under
-- session_replication_role = replica (logical replication's apply, pg_restore
-- --disable-triggers), a key deleted there must revoke as well. (Re)created only
-- when missing or not enabled always.
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'rlsproxy_private.keys'::regclass
            AND tgname IN ('keys_changed', 'keys_changed_row') AND tgenabled = 'A') < 2 THEN
        CREATE OR REPLACE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rlsproxy_private.keys
            FOR EACH STATEMENT EXECUTE FUNCTION rlsproxy.keys_changed();
        CREATE OR REPLACE TRIGGER keys_changed_row AFTER INSERT OR UPDATE OR DELETE ON rlsproxy_private.keys
            FOR EACH ROW EXECUTE FUNCTION rlsproxy.keys_changed();
        ALTER TABLE rlsproxy_private.keys ENABLE ALWAYS TRIGGER keys_changed;
        ALTER TABLE rlsproxy_private.keys ENABLE ALWAYS TRIGGER keys_changed_row;
    END IF;
END
$$;

-- The admission key of a value under the keys of `epoch` (its first 16 bytes)
-- and the mask of its recorded tenant and expiry (the next 8): a session that
-- reads the sequences' shared values cannot tell a tenant or an expiry without
-- the value itself. The version tag keeps a record that an earlier version of
-- this file wrote (unmasked; an admission running while this file is applied
-- may still write one) from ever matching a key of this version.
CREATE OR REPLACE FUNCTION rlsproxy.admission_key(value text, epoch bigint)
RETURNS bytea
LANGUAGE sql
STABLE
BEGIN ATOMIC
    SELECT substr(sha256(convert_to('rlsproxy admission v2:' || value, 'UTF8') || int8send(epoch)), 1, 24);
END;
ALTER FUNCTION rlsproxy.admission_key(text, bigint) OWNER TO rlsproxy_owner;

-- The admission marker this session has when it admitted a value under the
-- current keys: the one read of the keys' epoch (its second field).
CREATE OR REPLACE FUNCTION rlsproxy.admission_marker()
RETURNS text
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT pg_backend_pid() || '.' || coalesce(pg_sequence_last_value('rlsproxy_private.keys_epoch'::regclass), 0);
END;
ALTER FUNCTION rlsproxy.admission_marker() OWNER TO rlsproxy_owner;

-- Whether `value` is the value admitted in this session. Inlined where it is
-- used (VOLATILE as currval is; the CASE keeps currval from running unset).
-- Once the marker is the current one, its epoch is the current epoch.
CREATE OR REPLACE FUNCTION rlsproxy.is_admitted(value text)
RETURNS boolean
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT CASE WHEN current_setting('rlsproxy.admitted', true) = rlsproxy.admission_marker()
                THEN substr(rlsproxy.admission_key(value, split_part(current_setting('rlsproxy.admitted', true), '.', 2)::bigint), 1, 16)
                     = int8send(currval('rlsproxy_private.admitted_hi'::regclass))
                       || int8send(currval('rlsproxy_private.admitted_lo'::regclass))
                ELSE false END;
END;
ALTER FUNCTION rlsproxy.is_admitted(text) OWNER TO rlsproxy_owner;

-- Verifies `value` and, when it is valid, records its admission in this
-- session. Records nothing in a read-only transaction (a standby) or one that
-- is not READ COMMITTED (its snapshot may predate a key's deletion), nor while
-- the keys are being changed: values are then verified the slow way. It keeps
-- no lock (a client calling it in an open block would hold off a revocation):
-- it reads the epoch, then checks that the SHARE lock could be had (no change
-- of the keys holds its lock, which it keeps until it commits), then verifies
-- with a snapshot taken after. A change that takes its lock after the check
-- moves the epoch after the read, so the record is void; one that committed
-- before is in the verification's snapshot. NOWAIT: a change in progress
-- stalls nobody.
-- The record is written high half last: until then (an interrupted call)
-- it matches no value, so it never pairs one value's key with another's
-- tenant or expiry. Then each sequence's shared value is overwritten (without
-- changing this session's currval): other sessions see no admission key, and
-- never an unmasked tenant or expiry, even at the instant in between.
CREATE OR REPLACE FUNCTION rlsproxy.record_admission(value text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    recordable boolean := current_setting('transaction_read_only') = 'off'
                          AND current_setting('transaction_isolation') = 'read committed';
    marker     text;
    key        bytea;
    verified   record;
BEGIN
    -- Whatever this session recorded before is not this value's: without a record of
    -- this value, its statements verify the slow way (and never read sequences that a
    -- DISCARD SEQUENCES may have emptied).
    PERFORM set_config('rlsproxy.admitted', '', false);
    marker := rlsproxy.admission_marker();
    IF recordable THEN
        -- The lock is taken in a subtransaction that is then rolled back, which
        -- releases it: only whether it could be had matters.
        BEGIN
            LOCK TABLE rlsproxy_private.keys IN SHARE MODE NOWAIT;
            RAISE EXCEPTION USING ERRCODE = 'RP001';
        EXCEPTION
            WHEN lock_not_available THEN recordable := false;
            WHEN SQLSTATE 'RP001' THEN NULL;
        END;
    END IF;
    SELECT v.tenant_id, (v.payload ->> 'exp')::numeric AS exp INTO verified FROM rlsproxy.verify(value) AS v;
    IF NOT recordable OR verified.exp IS NULL THEN
        RETURN verified.exp IS NOT NULL;
    END IF;
    key := rlsproxy.admission_key(value, split_part(marker, '.', 2)::bigint);
    PERFORM setval('rlsproxy_private.admitted_hi', ('x' || encode(substr(key, 1, 8), 'hex'))::bit(64)::bigint # 1);
    PERFORM setval('rlsproxy_private.admitted_tenant_id',
                   CASE WHEN verified.tenant_id IS NULL THEN 0
                        ELSE (least(floor(verified.exp), 4294967295)::bigint << 32)
                             | (verified.tenant_id::bigint & 4294967295) END
                   # ('x' || encode(substr(key, 17, 8), 'hex'))::bit(64)::bigint);
    PERFORM setval('rlsproxy_private.admitted_lo', ('x' || encode(substr(key, 9, 8), 'hex'))::bit(64)::bigint);
    PERFORM setval('rlsproxy_private.admitted_hi', ('x' || encode(substr(key, 1, 8), 'hex'))::bit(64)::bigint);
    PERFORM set_config('rlsproxy.admitted', marker, false);
    PERFORM setval('rlsproxy_private.admitted_tenant_id', 0, false);
    PERFORM setval('rlsproxy_private.admitted_lo', 0, false);
    PERFORM setval('rlsproxy_private.admitted_hi', 0, false);
    RETURN true;
END
$fn$;
ALTER FUNCTION rlsproxy.record_admission(text) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.record_admission(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.record_admission(text) TO PUBLIC;

-- What the proxy calls with the value it sets: records the admission unless
-- it is there already (or `force`: after a client's DISCARD, which may have
-- emptied the sequences' session state). True when `value` is admitted or
-- valid; false at once for the empty value the proxy sets to clear a
-- connection's context (any previous admission stays: it is only ever used
-- for its own value). The proxy forces it; unforced, it records unless this
-- very value is the one admitted.
CREATE OR REPLACE FUNCTION rlsproxy.admit(value text, force boolean DEFAULT false)
RETURNS boolean
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT CASE WHEN coalesce(value, '') = '' THEN false
                WHEN NOT force AND rlsproxy.is_admitted(value) THEN true
                ELSE rlsproxy.record_admission(value) END;
END;
ALTER FUNCTION rlsproxy.admit(text, boolean) OWNER TO rlsproxy_owner;

-- The verified context of this session (rlsproxy.signed_context): an admitted
-- value's read from the value itself, any other's from rlsproxy.verify(). The
-- accessors below are plain SQL that the planner inlines, so a policy's
-- `(SELECT rlsproxy.role())` is one call of this per statement.
-- SECURITY INVOKER: currval needs no more than SELECT.
CREATE OR REPLACE FUNCTION rlsproxy.context(
    OUT tenant text, OUT tenant_id integer, OUT role text, OUT kid text, OUT payload json)
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    value text := current_setting('rlsproxy.signed_context', true);
BEGIN
    IF rlsproxy.is_admitted(value) IS NOT TRUE THEN
        SELECT v.tenant, v.tenant_id, v.role, v.kid, v.payload INTO tenant, tenant_id, role, kid, payload
        FROM rlsproxy.verify(value) AS v;
        RETURN;
    END IF;
    -- Verified when admitted: only expiry is left to check.
    payload := rlsproxy.payload_of(value);
    IF (payload ->> 'exp')::numeric > extract(epoch FROM now()) THEN
        tenant := payload ->> 'tenant';
        tenant_id := rlsproxy.int4_or_null(tenant);
        role := payload ->> 'role';
        kid := split_part(value, '.', 2);
    ELSE
        payload := NULL;
    END IF;
END
$fn$;
ALTER FUNCTION rlsproxy.context() OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.context() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.context() TO PUBLIC;

-- The accessors: SECURITY INVOKER, no SET clause and a standard-SQL body
-- (bound when created), so the planner inlines them. (Earlier versions made
-- them SECURITY DEFINER; CREATE OR REPLACE resets those attributes.)
-- The verified context as jsonb: the payload object plus "kid", or NULL. (Not
-- inlined, it reads two fields of one call: for inspection, not for policies.)
CREATE OR REPLACE FUNCTION rlsproxy.verified_context()
RETURNS jsonb
LANGUAGE sql
STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT c.payload::jsonb || jsonb_build_object('kid', c.kid) FROM rlsproxy.context() AS c;
END;

-- The verified tenant as text (tenant claims that are not integers).
CREATE OR REPLACE FUNCTION rlsproxy.tenant()
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (rlsproxy.context()).tenant;
END;

-- The verified tenant as uuid; NULL also when it is not a uuid in its canonical
-- (lower-case) spelling, which `[jwt] tenant_format = "uuid"` requires. What strict
-- policies on uuid columns compare with.
CREATE OR REPLACE FUNCTION rlsproxy.tenant_uuid()
RETURNS uuid
LANGUAGE sql
STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN c.tenant ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN c.tenant::uuid END
    FROM rlsproxy.context() AS c;
END;

-- The verified tenant as integer; NULL also when it is not an int4. What
-- strict policies on integer columns call once per statement, hence its own
-- admitted way that reads no payload: the recorded tenant, unmasked, and no
-- SET clause (it costs as much again): every name in it is schema-qualified
-- instead, operators included.
CREATE OR REPLACE FUNCTION rlsproxy.tenant_id()
RETURNS integer
LANGUAGE plpgsql
STABLE PARALLEL SAFE
AS $fn$
DECLARE
    -- The admission key and mask of this session's value, when it admitted one under the
    -- current keys (is_admitted, computing the key once).
    k pg_catalog.bytea := CASE WHEN pg_catalog.current_setting('rlsproxy.admitted', true)
                                    OPERATOR(pg_catalog.=) rlsproxy.admission_marker()
                               THEN rlsproxy.admission_key(
                                        pg_catalog.current_setting('rlsproxy.signed_context', true),
                                        pg_catalog.split_part(pg_catalog.current_setting('rlsproxy.admitted', true),
                                                              '.', 2)::pg_catalog.int8) END;
    -- The recorded expiry << 32 | tenant, unmasked.
    t pg_catalog.int8;
BEGIN
    IF k IS NULL OR pg_catalog.substr(k, 1, 16) OPERATOR(pg_catalog.<>)
            (pg_catalog.int8send(rlsproxy.admitted_hi())
             OPERATOR(pg_catalog.||) pg_catalog.int8send(rlsproxy.admitted_lo())) THEN
        RETURN (rlsproxy.context()).tenant_id;
    END IF;
    t := rlsproxy.admitted_tenant()
         OPERATOR(pg_catalog.#) (('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr(k, 17, 8), 'hex'))
                                 ::pg_catalog.bit(64))::pg_catalog.int8;
    RETURN CASE WHEN (t OPERATOR(pg_catalog.>>) 32) OPERATOR(pg_catalog.&) 4294967295
                     OPERATOR(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now())::pg_catalog.int8
                THEN ((t OPERATOR(pg_catalog.<<) 32) OPERATOR(pg_catalog.>>) 32)::pg_catalog.int4 END;
END
$fn$;-- The verified role claim (NULL when none, or when the context is not valid).
CREATE OR REPLACE FUNCTION rlsproxy.role()
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (rlsproxy.context()).role;
END;

ALTER FUNCTION rlsproxy.verified_context() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.tenant() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.tenant_id() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.tenant_uuid() OWNER TO rlsproxy_owner;
ALTER FUNCTION rlsproxy.role() OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.verified_context(), rlsproxy.tenant(), rlsproxy.tenant_id(), rlsproxy.tenant_uuid(),
    rlsproxy.role() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rlsproxy.verified_context(), rlsproxy.tenant(), rlsproxy.tenant_id(), rlsproxy.tenant_uuid(),
    rlsproxy.role() TO PUBLIC;

-- Binds a table's permissive role policies (`TO <role>`, not PUBLIC) to the
-- signed role: each USING and WITH CHECK expression that does not call
-- rlsproxy.role() yet becomes `(<expression>) AND (SELECT rlsproxy.role()) =
-- current_user` (just the latter for `true`). The proxy's role is a member of every role a token may name
-- (it must be, to SET ROLE), so SQL that runs `SET ROLE admin_role` or
-- `set_config('role', ...)` some other way would otherwise get the policy's
-- rows; bound, they need a value signed for that role. Returns how many
-- policies it changed (0 on a re-run). Run it again after creating a role
-- policy on a strict table (enable_strict_policies runs it).
-- SECURITY INVOKER, EXECUTE not granted to PUBLIC, as enable_strict_policies.
CREATE OR REPLACE FUNCTION rlsproxy.bind_role_policies(tbl regclass)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    signed  constant text := '(SELECT rlsproxy.role()) = current_user::text';
    pol     record;
    clauses text;
    changed integer := 0;
BEGIN
    -- pg_get_expr prints names as this search_path (pg_catalog only) needs them.
    FOR pol IN
        SELECT p.polname, pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS checks
        FROM pg_policy AS p
        WHERE p.polrelid = tbl AND p.polpermissive AND NOT 0 = ANY (p.polroles)
        ORDER BY p.polname
    LOOP
        clauses := '';
        IF pol.qual IS NOT NULL AND strpos(pol.qual, 'rlsproxy.role()') = 0 THEN
            clauses := format(' USING (%s)', CASE pol.qual WHEN 'true' THEN signed
                                                  ELSE format('(%s) AND %s', pol.qual, signed) END);
        END IF;
        IF pol.checks IS NOT NULL AND strpos(pol.checks, 'rlsproxy.role()') = 0 THEN
            clauses := clauses || format(' WITH CHECK (%s)', CASE pol.checks WHEN 'true' THEN signed
                                                             ELSE format('(%s) AND %s', pol.checks, signed) END);
        END IF;
        IF clauses <> '' THEN
            EXECUTE format('ALTER POLICY %I ON %s', pol.polname, tbl) || clauses;
            changed := changed + 1;
        END IF;
    END LOOP;
    RETURN changed;
END
$fn$;

ALTER FUNCTION rlsproxy.bind_role_policies(regclass) OWNER TO rlsproxy_owner;
REVOKE ALL ON FUNCTION rlsproxy.bind_role_policies(regclass) FROM PUBLIC;

-- (Re)creates the per-command strict policies of a table and turns on (and
-- forces) row-level security. The tenant column may be an integer type
-- (compared with tenant_id()), uuid (tenant_uuid()) or text/varchar (tenant()). The
-- wrapped form `(SELECT rlsproxy.tenant_id())` is an InitPlan: verified once
-- per statement, not once per row.
-- SECURITY INVOKER: it can do only what its caller (the table's owner, or a
-- superuser) could do anyway; EXECUTE is not granted to PUBLIC.
-- Permissive policies are OR-ed: another permissive policy for PUBLIC on the
-- same table (e.g. one on app.current_tenant under another name) would let
-- rows through whatever the signed context says, so they are reported with a
-- WARNING (drop them). Policies for specific roles (admin_bypass) are kept and
-- bound to the signed role (rlsproxy.bind_role_policies, below).
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
    ELSIF col_type = 'uuid'::regtype THEN
        same := format('%I = (SELECT rlsproxy.tenant_uuid())', tenant_column);
    ELSIF col_type IN ('text'::regtype, 'character varying'::regtype) THEN
        same := format('%I = (SELECT rlsproxy.tenant())', tenant_column);
    ELSE
        RAISE EXCEPTION 'tenant column "%" of % has type %, expected an integer type, uuid, text or varchar',
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
    PERFORM rlsproxy.bind_role_policies(tbl);

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
    WHERE c.oid = 'rlsproxy_private.keys'::regclass AND a.grantee <> c.relowner;
    IF grantees IS NOT NULL THEN
        RAISE WARNING 'rlsproxy_private.keys is readable by % besides its owner', grantees
            USING HINT = 'REVOKE ALL ON rlsproxy_private.keys FROM ...: the proxy''s role must never read the keys.';
    END IF;
END
$$;

COMMIT;

-- Admissions recorded by an earlier version of this file are not masked: moving
-- the keys' epoch voids every admission, and sessions admit again (after the
-- COMMIT, so that no admission can read the new epoch and run the old code).
DO $$
BEGIN
    PERFORM nextval('rlsproxy_private.keys_epoch');
END
$$;
