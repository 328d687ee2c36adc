// node-postgres (pg) through rlsproxy.
//
// Checks: simple query (no values: simple protocol), parameterized query
// (unnamed extended protocol), a named prepared query {name, text, values}
// reused 10 times, BEGIN/COMMIT and ROLLBACK, COPY in/out with pg-copy-streams
// (temp table dropped at commit; RLS applies to COPY (SELECT ...) TO STDOUT),
// tenant isolation with two tokens, and concurrent workers of both tenants
// (a pg.Pool per tenant, half as many connections as workers, named queries).
// Prints PASS/FAIL lines like tests/clients/py/common.py.
'use strict';

const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');
const pg = require('pg');
const copyStreams = require('pg-copy-streams');

const env = process.env;
const MODE = env.RLS_MODE || 'session';
const TOKENS = { 1: env.TOKEN_T1, 2: env.TOKEN_T2 };
const USERS = { 1: 'alice', 2: 'bob' };
const WORKERS = Number(env.CLIENT_WORKERS || 4);
const TXNS = Number(env.CLIENT_TXNS || 100);
const TITLES = {
  1: ['acme roadmap', 'acme payroll', 'acme onboarding'],
  2: ['globex merger plan', 'globex handbook'],
};
const DOCS = 'SELECT tenant_id, title FROM documents';
const COPY_ROWS = Array.from({ length: 100 }, (_, i) => [i + 1, `row ${i + 1} ünïcødé`]);

let failed = 0;
function line(word, check, reason) {
  let text = `${word} ${MODE} node-pg ${check}`;
  if (reason !== undefined) text += ': ' + String(reason).replace(/\s+/g, ' ').slice(0, 400);
  console.log(text);
}
async function run(check, fn) {
  try {
    await fn();
    line('PASS', check);
  } catch (err) {
    failed += 1;
    line('FAIL', check, `${err.name}: ${err.message}`);
    if (env.CLIENT_VERBOSE) console.error(err);
  }
}

function expectEq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}
const sorted = (a) => [...a].sort();
function ownRowsOnly(tenant, rows, what) {
  const foreign = rows.filter((r) => r.tenant_id !== tenant);
  if (foreign.length) throw new Error(`${what}: tenant ${tenant} saw foreign rows ${JSON.stringify(foreign.slice(0, 3))}`);
  const seen = new Set(rows.map((r) => r.title));
  const missing = TITLES[tenant].filter((t) => !seen.has(t));
  if (missing.length) throw new Error(`${what}: tenant ${tenant} misses its rows ${JSON.stringify(missing)}`);
}

function config(tenant) {
  return {
    host: env.PROXY_HOST || '127.0.0.1',
    port: Number(env.PROXY_PORT || 6432),
    database: env.PROXY_DB || 'app',
    user: USERS[tenant],
    password: TOKENS[tenant],
    ssl: false,
    connectionTimeoutMillis: 10000,
  };
}
async function connect(tenant) {
  const client = new pg.Client(config(tenant));
  await client.connect();
  return client;
}
const count = async (c, title) =>
  Number((await c.query('SELECT count(*) AS n FROM documents WHERE title = $1', [title])).rows[0].n);

async function simpleQuery(c) {
  const { rows } = await c.query("SELECT current_setting('app.current_tenant') AS t, count(*)::int AS n FROM documents");
  expectEq(rows, [{ t: '1', n: 3 }], '(app.current_tenant, visible documents)');
}

async function parameterized(c) {
  const sql = 'SELECT title FROM documents WHERE title LIKE $1 ORDER BY id';
  expectEq(sorted((await c.query(sql, ['acme%'])).rows.map((r) => r.title)), sorted(TITLES[1]), 'own titles');
  expectEq((await c.query(sql, ['globex%'])).rows, [], "other tenant's titles");
}

async function prepared(c) {
  let rows = [];
  for (let id = 1; id <= 10; id++) {
    const res = await c.query({ name: 'doc_by_id', text: `${DOCS} WHERE id = $1`, values: [id] });
    rows = rows.concat(res.rows);
  }
  ownRowsOnly(1, rows, 'prepared statement');
  expectEq(sorted(rows.map((r) => r.title)), sorted(TITLES[1]), 'titles by id 1..10');
}

async function commit(c, other2) {
  const title = `node-pg commit ${MODE}`;
  await c.query('BEGIN');
  await c.query('INSERT INTO documents (tenant_id, title) VALUES (1, $1)', [title]);
  await c.query('COMMIT');
  try {
    const other1 = await connect(1); // another session of tenant 1 sees the committed row
    try {
      expectEq(await count(other1, title), 1, "committed row seen by tenant 1's other session");
    } finally {
      await other1.end();
    }
    expectEq(await count(other2, title), 0, 'committed row seen by tenant 2');
  } finally {
    await c.query('DELETE FROM documents WHERE title = $1', [title]);
  }
}

async function rollback(c) {
  const title = `node-pg rollback ${MODE}`;
  await c.query('BEGIN');
  await c.query('INSERT INTO documents (tenant_id, title) VALUES (1, $1)', [title]);
  expectEq(await count(c, title), 1, 'row inside the transaction');
  await c.query('ROLLBACK');
  expectEq(await count(c, title), 0, 'row after ROLLBACK');
}

async function copyIn(c) {
  await c.query('BEGIN');
  try {
    await c.query('CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP');
    const data = COPY_ROWS.map(([id, title]) => `${id}\t${title}\n`).join('');
    await pipeline(Readable.from([Buffer.from(data)]), c.query(copyStreams.from('COPY copy_t (id, title) FROM STDIN')));
    const { rows } = await c.query({ text: 'SELECT id, title FROM copy_t ORDER BY id', rowMode: 'array' });
    expectEq(rows, COPY_ROWS, 'copied rows');
  } finally {
    await c.query('COMMIT');
  }
}

async function copyOut(c) {
  const chunks = [];
  const sink = new Writable({ write(chunk, _enc, done) { chunks.push(chunk); done(); } });
  await pipeline(c.query(copyStreams.to(`COPY (${DOCS} ORDER BY id) TO STDOUT`)), sink);
  const rows = Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean)
    .map((l) => { const [t, title] = l.split('\t'); return { tenant_id: Number(t), title }; });
  ownRowsOnly(1, rows, 'COPY TO');
  expectEq(rows.length, 3, 'rows copied out');
}

async function isolation(clients) {
  for (const tenant of [1, 2]) {
    const c = clients[tenant];
    const { rows } = await c.query(DOCS);
    ownRowsOnly(tenant, rows, 'documents');
    expectEq(sorted(rows.map((r) => r.title)), sorted(TITLES[tenant]), `tenant ${tenant} titles`);
    expectEq((await c.query('SELECT id FROM tenants')).rows, [{ id: tenant }], `tenant ${tenant} tenants rows`);
  }
  try {
    await clients[1].query("INSERT INTO documents (tenant_id, title) VALUES (2, 'forged by tenant 1')");
  } catch (err) {
    if (err.code === '42501') return;
    throw err;
  }
  throw new Error('tenant 1 inserted a row for tenant 2');
}

async function concurrent() {
  const pools = {
    1: new pg.Pool({ ...config(1), max: Math.max(1, WORKERS >> 1) }),
    2: new pg.Pool({ ...config(2), max: Math.max(1, WORKERS >> 1) }),
  };
  const work = async (i, tenant) => {
    for (let n = 0; n < TXNS; n++) {
      const c = await pools[tenant].connect();
      let rows;
      try {
        await c.query('BEGIN');
        if (n % 2) {
          await c.query({ name: 'worker_insert', text: 'INSERT INTO documents (tenant_id, title) VALUES ($1, $2)', values: [tenant, `w${i}`] });
        }
        rows = (await c.query({ name: 'worker_docs', text: DOCS })).rows;
        await c.query(n % 2 ? 'ROLLBACK' : 'COMMIT');
      } finally {
        c.release();
      }
      ownRowsOnly(tenant, rows, `worker ${i} txn ${n}`);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: WORKERS }, (_, i) => work(i, 1 + (i % 2))));
  await Promise.all([pools[1].end(), pools[2].end()]);
  const errors = results.map((r, i) => (r.status === 'rejected' ? `worker ${i}: ${r.reason.message}` : null)).filter(Boolean);
  if (errors.length) throw new Error(errors.slice(0, 3).join('; '));
}

async function main() {
  const clients = {};
  await run('connect', async () => {
    clients[1] = await connect(1);
    clients[2] = await connect(2);
  });
  if (!clients[2]) process.exit(1);
  const c1 = clients[1];
  await run('simple_query', () => simpleQuery(c1));
  await run('parameterized', () => parameterized(c1));
  await run('prepared', () => prepared(c1));
  await run('commit', () => commit(c1, clients[2]));
  await run('rollback', () => rollback(c1));
  await run('copy_in', () => copyIn(c1));
  await run('copy_out', () => copyOut(c1));
  await run('isolation', () => isolation(clients));
  await run('concurrent', concurrent);
  await Promise.all([clients[1].end(), clients[2].end()]);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
