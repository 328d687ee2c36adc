-- Tenant-scoped read on the example RLS schema: one of the tenant's documents.
-- :lo and :hi bound the tenant's document ids (bench/run.sh passes them with -D).
\set id random(:lo, :hi)
SELECT id, title, body FROM documents WHERE id = :id;
