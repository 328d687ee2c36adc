-- Example multi-tenant schema protected by row-level security (RLS).
--
-- Run by a superuser in database `app`:
--   psql -X -v ON_ERROR_STOP=1 -d app -f migrations/0001_example_schema.sql
-- Re-runnable: roles are created only when missing, tables IF NOT EXISTS,
-- policies dropped and recreated (the pattern of the application-side RLS guide
-- that rlsproxy replaces; its policies keep working unchanged behind the proxy).
--
-- The proxy connects as `app_proxy` and, at the start of every transaction, runs
--   SELECT set_config('app.current_tenant', <tenant claim of the client's JWT>, false)
-- so every policy below sees the verified tenant of the client being served.

-- DROP POLICY IF EXISTS would print a NOTICE per policy on the first run.
SET client_min_messages = warning;

BEGIN;

-- The proxy's upstream role. NOINHERIT matters: a policy `TO admin_role` applies
-- to every role that *inherits* admin_role, so an inheriting app_proxy would give
-- every tenant the admin's view without any SET ROLE. With NOINHERIT, app_proxy
-- gets admin_role's rights only after an explicit `SET ROLE admin_role`, which the
-- proxy's statement guard refuses to clients (and which the proxy itself uses
-- only for tokens whose role claim the configuration allows). rlsproxy checks
-- this attribute at start. (PG16+ can instead grant WITH INHERIT FALSE.)
-- The password is set outside this file (deployment secret, test harness).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_proxy') THEN
        CREATE ROLE app_proxy LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    ELSE
        ALTER ROLE app_proxy LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

-- Maintenance role that sees every tenant through the admin policies below.
-- NOLOGIN: reachable only by SET ROLE from a member. NOBYPASSRLS: its access is
-- granted by policies (auditable, per table), not by switching RLS off.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'admin_role') THEN
        CREATE ROLE admin_role NOLOGIN NOBYPASSRLS;
    ELSE
        ALTER ROLE admin_role NOLOGIN NOBYPASSRLS;
    END IF;
END
$$;

-- Membership without inheritance (app_proxy is NOINHERIT): allows SET ROLE only.
GRANT admin_role TO app_proxy;

CREATE TABLE IF NOT EXISTS tenants (
    id   integer PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id        serial PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id),
    name      text NOT NULL
);

CREATE TABLE IF NOT EXISTS documents (
    id        serial PRIMARY KEY,
    tenant_id integer NOT NULL REFERENCES tenants (id),
    title     text NOT NULL,
    body      text
);

-- Every policy filters on tenant_id; without an index each query scans all tenants.
CREATE INDEX IF NOT EXISTS users_tenant_id_idx ON users (tenant_id);
CREATE INDEX IF NOT EXISTS documents_tenant_id_idx ON documents (tenant_id);

-- ENABLE turns the policies on for ordinary roles. FORCE applies them to the
-- table owner as well: without it, whoever owns the tables (often the role that
-- runs migrations, sometimes the application's role) silently sees every row.
-- (Superusers and BYPASSRLS roles always bypass RLS: never use them upstream.)
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;

-- Per-command tenant policies, exactly as in the application-side guide.
-- current_setting('app.current_tenant') without missing_ok raises when the
-- setting was never set in the session, and ''::integer raises after RESET:
-- a connection without a tenant context gets an error, never every row.

-- tenants: a tenant sees (and may touch) only its own row.
DROP POLICY IF EXISTS tenant_isolation ON tenants;
DROP POLICY IF EXISTS tenant_isolation_insert ON tenants;
DROP POLICY IF EXISTS tenant_isolation_update ON tenants;
DROP POLICY IF EXISTS tenant_isolation_delete ON tenants;
DROP POLICY IF EXISTS admin_bypass ON tenants;
CREATE POLICY tenant_isolation ON tenants
    FOR SELECT
    USING (id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_insert ON tenants
    FOR INSERT
    WITH CHECK (id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_update ON tenants
    FOR UPDATE
    USING (id = current_setting('app.current_tenant')::integer)
    WITH CHECK (id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_delete ON tenants
    FOR DELETE
    USING (id = current_setting('app.current_tenant')::integer);
CREATE POLICY admin_bypass ON tenants
    FOR ALL
    TO admin_role
    USING (true)
    WITH CHECK (true);

-- users
DROP POLICY IF EXISTS tenant_isolation ON users;
DROP POLICY IF EXISTS tenant_isolation_insert ON users;
DROP POLICY IF EXISTS tenant_isolation_update ON users;
DROP POLICY IF EXISTS tenant_isolation_delete ON users;
DROP POLICY IF EXISTS admin_bypass ON users;
CREATE POLICY tenant_isolation ON users
    FOR SELECT
    USING (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_insert ON users
    FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_update ON users
    FOR UPDATE
    USING (tenant_id = current_setting('app.current_tenant')::integer)
    WITH CHECK (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_delete ON users
    FOR DELETE
    USING (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY admin_bypass ON users
    FOR ALL
    TO admin_role
    USING (true)
    WITH CHECK (true);

-- documents
DROP POLICY IF EXISTS tenant_isolation ON documents;
DROP POLICY IF EXISTS tenant_isolation_insert ON documents;
DROP POLICY IF EXISTS tenant_isolation_update ON documents;
DROP POLICY IF EXISTS tenant_isolation_delete ON documents;
DROP POLICY IF EXISTS admin_bypass ON documents;
CREATE POLICY tenant_isolation ON documents
    FOR SELECT
    USING (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_insert ON documents
    FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_update ON documents
    FOR UPDATE
    USING (tenant_id = current_setting('app.current_tenant')::integer)
    WITH CHECK (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY tenant_isolation_delete ON documents
    FOR DELETE
    USING (tenant_id = current_setting('app.current_tenant')::integer);
CREATE POLICY admin_bypass ON documents
    FOR ALL
    TO admin_role
    USING (true)
    WITH CHECK (true);

-- Privileges: RLS filters rows, GRANTs decide which commands run at all.
-- Both roles need them: app_proxy for tenant sessions, admin_role after SET ROLE
-- (a NOINHERIT app_proxy does not use admin_role's grants before that).
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users, documents TO app_proxy, admin_role;
GRANT USAGE ON SEQUENCE users_id_seq, documents_id_seq TO app_proxy, admin_role;

COMMIT;
