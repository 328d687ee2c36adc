# ruby-pg (Debian's ruby-pg, libpq) through rlsproxy.
#
# Checks: simple query (exec: a Query message), parameterized query (exec_params:
# unnamed extended protocol), a named statement (prepare/exec_prepared) reused 10
# times, BEGIN/COMMIT and ROLLBACK (conn.transaction, and SQL BEGIN/ROLLBACK), COPY in
# (copy_data with PG::TextEncoder::CopyRow into a temp table dropped at commit), COPY
# out (copy_data/get_copy_data; RLS applies to COPY (SELECT ...) TO STDOUT), tenant
# isolation with two tokens, and concurrent workers of both tenants (threads, each its
# own connection and named statements, reused across transactions).
$LOAD_PATH.unshift(__dir__)
require 'common'
require 'pg'

def connect(tenant)
  PG.connect(**conn_params(tenant))
end

def pairs(result)
  result.values.map { |t, title| [Integer(t), title] }
end

def count(conn, title)
  Integer(conn.exec_params('SELECT count(*) FROM documents WHERE title = $1', [title]).getvalue(0, 0))
end

def simple_query(conn)
  row = conn.exec("SELECT current_setting('app.current_tenant'), count(*) FROM documents").values
  expect_eq(row, [['1', '3']], '(app.current_tenant, visible documents)')
end

def parameterized(conn)
  sql = 'SELECT title FROM documents WHERE title LIKE $1 ORDER BY id'
  expect_eq(conn.exec_params(sql, ['acme%']).column_values(0).sort, TITLES[1], 'own titles')
  expect_eq(conn.exec_params(sql, ['globex%']).values, [], "other tenant's titles")
end

def prepared(conn)
  conn.prepare('doc_by_id', "#{DOCS} WHERE id = $1")
  rows = (1..10).flat_map { |id| pairs(conn.exec_prepared('doc_by_id', [id])) }
  own_rows_only(1, rows, 'prepared statement')
  expect_eq(rows.map(&:last).sort, TITLES[1], 'titles by id 1..10')
  # The name is the client's: DESCRIBE of it works (in transaction pooling too).
  expect_eq(conn.describe_prepared('doc_by_id').nparams, 1, 'parameters of the described statement')
end

def commit(conn, other2)
  title = "ruby-pg commit #{MODE}"
  conn.transaction do |c| # BEGIN ... COMMIT
    c.exec_params('INSERT INTO documents (tenant_id, title) VALUES (1, $1)', [title])
  end
  other1 = connect(1) # another session of tenant 1 sees the committed row
  begin
    expect_eq(count(other1, title), 1, "committed row seen by tenant 1's other session")
  ensure
    other1.close
  end
  expect_eq(count(other2, title), 0, 'committed row seen by tenant 2')
ensure
  conn.exec_params('DELETE FROM documents WHERE title = $1', [title])
end

def rollback(conn)
  title = "ruby-pg rollback #{MODE}"
  conn.exec('BEGIN')
  conn.exec_params('INSERT INTO documents (tenant_id, title) VALUES (1, $1)', [title])
  expect_eq(count(conn, title), 1, 'row inside the transaction')
  conn.exec('ROLLBACK')
  expect_eq(count(conn, title), 0, 'row after ROLLBACK')
  # conn.transaction rolls back when the block raises.
  begin
    conn.transaction do |c|
      c.exec_params('INSERT INTO documents (tenant_id, title) VALUES (1, $1)', [title])
      raise ArgumentError, 'roll back'
    end
  rescue ArgumentError
    nil
  end
  expect_eq(count(conn, title), 0, 'row after a block that raised')
end

def copy_in(conn)
  conn.transaction do |c|
    c.exec('CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP')
    c.copy_data('COPY copy_t (id, title) FROM STDIN', PG::TextEncoder::CopyRow.new) do
      COPY_ROWS.each { |r| c.put_copy_data(r) }
    end
    got = c.exec('SELECT id, title FROM copy_t ORDER BY id').values.map { |id, t| [Integer(id), t] }
    expect_eq(got, COPY_ROWS, 'copied rows')
  end
end

def copy_out(conn)
  rows = []
  conn.copy_data("COPY (#{DOCS} ORDER BY id) TO STDOUT", PG::TextDecoder::CopyRow.new) do
    while (row = conn.get_copy_data)
      rows << [Integer(row[0]), row[1]]
    end
  end
  own_rows_only(1, rows, 'COPY TO')
  expect_eq(rows.size, 3, 'rows copied out')
end

def isolation(conns)
  conns.each do |tenant, conn|
    rows = pairs(conn.exec(DOCS))
    own_rows_only(tenant, rows, 'documents')
    expect_eq(rows.map(&:last).sort, TITLES[tenant], "tenant #{tenant} titles")
    expect_eq(conn.exec('SELECT id FROM tenants').values, [[tenant.to_s]], "tenant #{tenant} tenants rows")
  end
  begin
    conns[1].exec_params('INSERT INTO documents (tenant_id, title) VALUES ($1, $2)', [2, 'forged by tenant 1'])
  rescue PG::InsufficientPrivilege
    nil
  else
    raise CheckFailed, 'tenant 1 inserted a row for tenant 2'
  end
end

def concurrent
  run_workers do |i, tenant|
    conn = connect(tenant)
    begin
      conn.prepare('ins', 'INSERT INTO documents (tenant_id, title) VALUES ($1, $2)')
      conn.prepare('docs', DOCS)
      TXNS.times do |n|
        conn.exec('BEGIN')
        conn.exec_prepared('ins', [tenant, "w#{i}"]) if n.odd?
        rows = pairs(conn.exec_prepared('docs'))
        conn.exec(n.odd? ? 'ROLLBACK' : 'COMMIT')
        own_rows_only(tenant, rows, "worker #{i} txn #{n}")
      end
    ensure
      conn.close
    end
  end
end

checks = Checks.new('ruby-pg')
conns = {}
checks.run('connect') { [1, 2].each { |t| conns[t] = connect(t) } }
checks.exit! if conns.size < 2
c1 = conns[1]
checks.run('simple_query') { simple_query(c1) }
checks.run('parameterized') { parameterized(c1) }
checks.run('prepared') { prepared(c1) }
checks.run('commit') { commit(c1, conns[2]) }
checks.run('rollback') { rollback(c1) }
checks.run('copy_in') { copy_in(c1) }
checks.run('copy_out') { copy_out(c1) }
checks.run('isolation') { isolation(conns) }
checks.run('concurrent') { concurrent }
conns.each_value(&:close)
checks.exit!
