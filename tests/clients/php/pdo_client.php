<?php
// PDO pgsql (Debian's php-pgsql, libpq) through rlsproxy, with emulated or native prepares:
//   php pdo_client.php emulated   PDO::ATTR_EMULATE_PREPARES true: PDO quotes the values
//                                 into the text, every statement is a Query message
//   php pdo_client.php native     PDO::ATTR_EMULATE_PREPARES false: a named server-side
//                                 statement (pdo_stmt_XXXXXXXX) per PDOStatement, prepared
//                                 at its first execute; PDO sends SQL `DEALLOCATE <name>`
//                                 when the PDOStatement is destroyed
//
// Checks: simple query (PDO::query without parameters), parameterized query, a
// PDOStatement executed 10 times, BEGIN/COMMIT and ROLLBACK (beginTransaction/commit/
// rollBack, and SQL BEGIN/ROLLBACK), COPY in/out (pgsqlCopyFromArray into a temp table
// dropped at commit, pgsqlCopyToArray; RLS applies to COPY (SELECT ...) TO STDOUT),
// tenant isolation with two tokens, and concurrent workers of both tenants (processes,
// pcntl_fork when available, else one after another: PHP has no threads).
// Native prepares only: deallocate_in_transaction (a PDOStatement destroyed inside a
// transaction: PDO's SQL DEALLOCATE). Prints PASS/FAIL lines like tests/clients/py/common.py.

declare(strict_types=1);

$VARIANT = $argv[1] ?? 'native';
if (!in_array($VARIANT, ['emulated', 'native'], true)) {
    fwrite(STDERR, "usage: pdo_client.php emulated|native\n");
    exit(2);
}
$DRIVER = "pdo-$VARIANT";
$MODE = getenv('RLS_MODE') ?: 'session';
$WORKERS = (int) (getenv('CLIENT_WORKERS') ?: 4);
$TXNS = (int) (getenv('CLIENT_TXNS') ?: 100);
const TITLES = [
    1 => ['acme onboarding', 'acme payroll', 'acme roadmap'],
    2 => ['globex handbook', 'globex merger plan'],
];
const DOCS = 'SELECT tenant_id, title FROM documents';
$failed = 0;

class CheckFailed extends Exception {}

function line(string $word, string $check, ?string $reason = null): void
{
    global $MODE, $DRIVER;
    $text = "$word $MODE $DRIVER $check";
    if ($reason !== null) {
        $text .= ': ' . substr(preg_replace('/\s+/', ' ', $reason), 0, 400);
    }
    echo $text, "\n";
    fflush(STDOUT);
}

function check(string $name, callable $body): void
{
    global $failed;
    try {
        $body();
    } catch (Throwable $e) {
        $failed++;
        line('FAIL', $name, get_class($e) . ': ' . $e->getMessage());
        if (getenv('CLIENT_VERBOSE')) {
            fwrite(STDERR, (string) $e . "\n");
        }
        return;
    }
    line('PASS', $name);
}

function expect_eq($got, $want, string $what): void
{
    if ($got !== $want) {
        throw new CheckFailed("$what: got " . json_encode($got, JSON_UNESCAPED_UNICODE) . ', want '
            . json_encode($want, JSON_UNESCAPED_UNICODE));
    }
}

function connect(int $tenant): PDO
{
    global $VARIANT;
    $dsn = sprintf('pgsql:host=%s;port=%s;dbname=%s;sslmode=disable;connect_timeout=10',
        getenv('PROXY_HOST') ?: '127.0.0.1', getenv('PROXY_PORT') ?: '6432', getenv('PROXY_DB') ?: 'app');
    return new PDO($dsn, $tenant === 1 ? 'alice' : 'bob', getenv("TOKEN_T$tenant"), [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => $VARIANT === 'emulated',
        PDO::ATTR_STRINGIFY_FETCHES => false,
    ]);
}

/** [[tenant_id, title], ...] */
function rows(PDOStatement $st): array
{
    return array_map(fn ($r) => [(int) $r[0], $r[1]], $st->fetchAll(PDO::FETCH_NUM));
}

function titles(array $rows): array
{
    $t = array_values(array_unique(array_column($rows, 1)));
    sort($t);
    return $t;
}

function own_rows_only(int $tenant, array $rows, string $what): void
{
    foreach ($rows as $r) {
        if ($r[0] !== $tenant) {
            throw new CheckFailed("$what: tenant $tenant saw foreign row " . json_encode($r));
        }
    }
    $missing = array_diff(TITLES[$tenant], array_column($rows, 1));
    if ($missing) {
        throw new CheckFailed("$what: tenant $tenant misses its rows " . json_encode(array_values($missing)));
    }
}

function count_title(PDO $c, string $title): int
{
    $st = $c->prepare('SELECT count(*) FROM documents WHERE title = ?');
    $st->execute([$title]);
    return (int) $st->fetchColumn();
}

function simple_query(PDO $c): void
{
    $row = $c->query("SELECT current_setting('app.current_tenant'), count(*) FROM documents")->fetch(PDO::FETCH_NUM);
    expect_eq([$row[0], (int) $row[1]], ['1', 3], '(app.current_tenant, visible documents)');
}

function parameterized(PDO $c): void
{
    $st = $c->prepare(DOCS . ' WHERE title LIKE :pattern ORDER BY id');
    $st->execute(['pattern' => 'acme%']);
    expect_eq(titles(rows($st)), TITLES[1], 'own titles');
    $st->execute(['pattern' => 'globex%']);
    expect_eq(rows($st), [], "other tenant's titles");
    // A quote in a value: PDO's quoting (emulated) or a bind parameter (native).
    $st->execute(['pattern' => "acme' OR ''='"]);
    expect_eq(rows($st), [], 'a quote in the value');
}

function prepared(PDO $c): void
{
    $st = $c->prepare(DOCS . ' WHERE id = ?');
    $seen = [];
    for ($id = 1; $id <= 10; $id++) {
        $st->bindValue(1, $id, PDO::PARAM_INT);
        $st->execute();
        $seen = array_merge($seen, rows($st));
    }
    own_rows_only(1, $seen, 'prepared statement');
    expect_eq(titles($seen), TITLES[1], 'titles by id 1..10');
}

function commit(PDO $c, PDO $other2): void
{
    global $MODE;
    $title = "pdo commit $MODE";
    $ins = $c->prepare('INSERT INTO documents (tenant_id, title) VALUES (1, ?)');
    $c->beginTransaction();
    $ins->execute([$title]);
    $c->commit();
    try {
        $other1 = connect(1); // another session of tenant 1 sees the committed row
        expect_eq(count_title($other1, $title), 1, "committed row seen by tenant 1's other session");
        $other1 = null;
        expect_eq(count_title($other2, $title), 0, 'committed row seen by tenant 2');
    } finally {
        $c->prepare('DELETE FROM documents WHERE title = ?')->execute([$title]);
    }
}

function rollback(PDO $c): void
{
    global $MODE;
    $title = "pdo rollback $MODE";
    $ins = $c->prepare('INSERT INTO documents (tenant_id, title) VALUES (1, ?)');
    $count = $c->prepare('SELECT count(*) FROM documents WHERE title = ?');
    $c->beginTransaction();
    $ins->execute([$title]);
    $count->execute([$title]);
    expect_eq((int) $count->fetchColumn(), 1, 'row inside the transaction');
    $c->rollBack();
    $count->execute([$title]);
    expect_eq((int) $count->fetchColumn(), 0, 'row after rollBack');
    // The same in SQL.
    $c->exec('BEGIN');
    $ins->execute([$title]);
    $c->exec('ROLLBACK');
    $count->execute([$title]);
    expect_eq((int) $count->fetchColumn(), 0, 'row after SQL ROLLBACK');
}

function copy_rows(): array
{
    $rows = [];
    for ($i = 1; $i <= 100; $i++) {
        $rows[] = [$i, "row $i ünïcødé"];
    }
    return $rows;
}

function copy_in(PDO $c): void
{
    $c->beginTransaction();
    try {
        $c->exec('CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP');
        $lines = array_map(fn ($r) => "$r[0]\t$r[1]", copy_rows());
        expect_eq($c->pgsqlCopyFromArray('copy_t', $lines, "\t", '\\\\N', 'id, title'), true, 'pgsqlCopyFromArray');
        $got = array_map(fn ($r) => [(int) $r[0], $r[1]],
            $c->query('SELECT id, title FROM copy_t ORDER BY id')->fetchAll(PDO::FETCH_NUM));
        expect_eq($got, copy_rows(), 'copied rows');
        $c->commit();
    } finally {
        if ($c->inTransaction()) {
            $c->rollBack();
        }
    }
}

function copy_out(PDO $c): void
{
    // pgsqlCopyToArray sends COPY documents (tenant_id, title) TO STDIN: the server
    // applies the table's SELECT policies to COPY table TO.
    $lines = $c->pgsqlCopyToArray('documents', "\t", '\\\\N', 'tenant_id, title');
    $rows = array_map(function ($l) {
        [$t, $title] = explode("\t", rtrim($l, "\n"));
        return [(int) $t, $title];
    }, $lines);
    own_rows_only(1, $rows, 'COPY TO');
    expect_eq(count($rows), 3, 'rows copied out');
}

function isolation(array $conns): void
{
    foreach ($conns as $tenant => $c) {
        $docs = rows($c->query(DOCS));
        own_rows_only($tenant, $docs, 'documents');
        expect_eq(titles($docs), TITLES[$tenant], "tenant $tenant titles");
        $ids = array_map('intval', $c->query('SELECT id FROM tenants')->fetchAll(PDO::FETCH_COLUMN));
        expect_eq($ids, [$tenant], "tenant $tenant tenants rows");
    }
    try {
        $conns[1]->prepare('INSERT INTO documents (tenant_id, title) VALUES (?, ?)')->execute([2, 'forged by tenant 1']);
    } catch (PDOException $e) {
        expect_eq($e->getCode(), '42501', 'SQLSTATE of a forged insert');
        return;
    }
    throw new CheckFailed('tenant 1 inserted a row for tenant 2');
}

// Native prepares: a PDOStatement destroyed inside a transaction makes PDO send
// `DEALLOCATE pdo_stmt_…` there. Directly and in session pooling the name is the
// server's; in transaction pooling the statement lives under a proxy name and the proxy
// answers the DEALLOCATE itself: the transaction goes on in every mode. Checked exactly;
// also with PDO::PGSQL_ATTR_DISABLE_PREPARES (unnamed statements, no DEALLOCATE).
function deallocate_in_transaction(PDO $c): void
{
    deallocate_case($c, 'count 3');
    $unnamed = connect(1);
    $unnamed->setAttribute(PDO::PGSQL_ATTR_DISABLE_PREPARES, true);
    deallocate_case($unnamed, 'count 3');
}

function deallocate_case(PDO $c, string $want): void
{
    $c->beginTransaction();
    try {
        $st = $c->prepare('SELECT count(*) FROM documents WHERE id > ?');
        $st->execute([0]);
        expect_eq((int) $st->fetchColumn(), 3, 'count before the DEALLOCATE');
        $st = null; // PDO: DEALLOCATE pdo_stmt_…
        try {
            $n = (int) $c->query('SELECT count(*) FROM documents')->fetchColumn();
            $got = "count $n";
        } catch (PDOException $e) {
            $got = 'SQLSTATE ' . $e->getCode();
        }
        expect_eq($got, $want, 'the statement after the DEALLOCATE');
    } finally {
        $c->rollBack();
    }
    expect_eq((int) $c->query('SELECT count(*) FROM documents')->fetchColumn(), 3, 'count after the rollback');
}

function worker(int $i, int $tenant): void
{
    global $TXNS;
    $c = connect($tenant);
    $ins = $c->prepare('INSERT INTO documents (tenant_id, title) VALUES (?, ?)');
    $docs = $c->prepare(DOCS);
    for ($n = 0; $n < $TXNS; $n++) {
        $c->beginTransaction();
        if ($n % 2) {
            $ins->execute([$tenant, "w$i"]);
        }
        $docs->execute();
        $rows = rows($docs);
        $n % 2 ? $c->rollBack() : $c->commit();
        own_rows_only($tenant, $rows, "worker $i txn $n");
    }
}

function concurrent(): void
{
    global $WORKERS;
    $errors = [];
    if (!function_exists('pcntl_fork')) {
        // No pcntl (php-cli without it): the workers one after another.
        for ($i = 0; $i < $WORKERS; $i++) {
            try {
                worker($i, 1 + $i % 2);
            } catch (Throwable $e) {
                $errors[] = "worker $i: " . $e->getMessage();
            }
        }
    } else {
        $pids = [];
        for ($i = 0; $i < $WORKERS; $i++) {
            $pid = pcntl_fork();
            if ($pid === -1) {
                throw new CheckFailed('fork failed');
            }
            if ($pid === 0) {
                try {
                    worker($i, 1 + $i % 2);
                    exit(0);
                } catch (Throwable $e) {
                    fwrite(STDERR, "worker $i (tenant " . (1 + $i % 2) . '): ' . $e->getMessage() . "\n");
                    exit(1);
                }
            }
            $pids[$pid] = $i;
        }
        foreach ($pids as $pid => $i) {
            pcntl_waitpid($pid, $status);
            if (!pcntl_wifexited($status) || pcntl_wexitstatus($status) !== 0) {
                $errors[] = "worker $i exited with status $status (its error on stderr)";
            }
        }
    }
    if ($errors) {
        throw new CheckFailed(implode('; ', array_slice($errors, 0, 3)));
    }
}

$conns = [];
check('connect', function () use (&$conns) {
    $conns[1] = connect(1);
    $conns[2] = connect(2);
});
if (count($conns) < 2) {
    exit(1);
}
$c1 = $conns[1];
check('simple_query', fn () => simple_query($c1));
check('parameterized', fn () => parameterized($c1));
check('prepared', fn () => prepared($c1));
check('commit', fn () => commit($c1, $conns[2]));
check('rollback', fn () => rollback($c1));
check('copy_in', fn () => copy_in($c1));
check('copy_out', fn () => copy_out($c1));
check('isolation', fn () => isolation($conns));
if ($VARIANT === 'native') {
    check('deallocate_in_transaction', fn () => deallocate_in_transaction($c1));
}
$conns = $c1 = null;
check('concurrent', 'concurrent');
exit($failed ? 1 : 0);
