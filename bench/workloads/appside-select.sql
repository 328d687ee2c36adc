-- What an application does without rlsproxy (README, top): its own
-- transaction around every query, to scope set_config to it (PgBouncer-safe).
\set aid random(1, 100000 * :scale)
BEGIN;
SELECT set_config('app.current_tenant', '1', true);
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
