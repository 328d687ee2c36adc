-- Example data: two tenants with distinct rows, so tests can assert exactly
-- which rows each tenant sees. Run by a superuser (superusers bypass RLS).
-- Re-runnable: fixed ids, ON CONFLICT DO NOTHING, sequences moved past them.

BEGIN;

INSERT INTO tenants (id, name) VALUES
    (1, 'acme'),
    (2, 'globex')
ON CONFLICT (id) DO NOTHING;

INSERT INTO users (id, tenant_id, name) VALUES
    (1, 1, 'alice'),
    (2, 1, 'arthur'),
    (3, 2, 'bob'),
    (4, 2, 'beatrice')
ON CONFLICT (id) DO NOTHING;

INSERT INTO documents (id, tenant_id, title, body) VALUES
    (1, 1, 'acme roadmap', 'Rockets, then anvils.'),
    (2, 1, 'acme payroll', 'Confidential: acme salaries.'),
    (3, 1, 'acme onboarding', 'Welcome to acme.'),
    (4, 2, 'globex merger plan', 'Confidential: globex only.'),
    (5, 2, 'globex handbook', 'Welcome to globex.')
ON CONFLICT (id) DO NOTHING;

-- PERFORM keeps psql quiet.
DO $$
BEGIN
    PERFORM setval('users_id_seq', (SELECT max(id) FROM users));
    PERFORM setval('documents_id_seq', (SELECT max(id) FROM documents));
END
$$;

COMMIT;
