-- Tenant-scoped write: update one of the tenant's documents and add a user row,
-- in one transaction (RLS WITH CHECK applies to both).
\set id random(:lo, :hi)
BEGIN;
UPDATE documents SET body = md5(random()::text) WHERE id = :id;
INSERT INTO users (tenant_id, name) VALUES (:tenant, 'bench');
END;
