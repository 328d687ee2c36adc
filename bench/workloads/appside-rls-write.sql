-- rls-write.sql as an application does it without rlsproxy (through PgBouncer).
\set id random(:lo, :hi)
BEGIN;
SELECT set_config('app.current_tenant', :tenant::text, true);
UPDATE documents SET body = md5(random()::text) WHERE id = :id;
INSERT INTO users (tenant_id, name) VALUES (:tenant, 'bench');
END;
