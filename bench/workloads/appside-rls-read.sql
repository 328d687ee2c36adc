-- rls-read.sql as an application does it without rlsproxy (through PgBouncer).
\set id random(:lo, :hi)
BEGIN;
SELECT set_config('app.current_tenant', :tenant::text, true);
SELECT id, title, body FROM documents WHERE id = :id;
END;
