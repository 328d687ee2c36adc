-- Defense in depth: every tenant's session runs as the proxy's one upstream
-- role, and PostgreSQL lets a role read the query text of its own other
-- sessions (pg_stat_activity) and cancel or terminate them. pg_locks (and
-- pg_lock_status() behind it) shows every session's locks, among them the
-- advisory lock keys other tenants hold (the proxy scopes the keys per tenant,
-- see 0006; the view still tells who locks what, and when). The statement guard
-- refuses those names ([guard] forbidden_objects); this removes the privileges
-- themselves, so that strict mode without the guard, or a path the guard
-- misses, cannot use them either. Superusers and pg_monitor / pg_signal_backend
-- members keep them.
--
-- Run by a superuser in every database the proxy serves (pg_catalog is per
-- database). Re-runnable.

REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM PUBLIC;
REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO pg_monitor;
REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_lock_status() FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_locks TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_lock_status() TO pg_monitor;
