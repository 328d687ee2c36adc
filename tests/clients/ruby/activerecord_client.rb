# ActiveRecord (Debian's ruby-activerecord, Rails 6.1, postgresql adapter on ruby-pg)
# through rlsproxy.
#
# Checks:
#   migration      as the superuser, directly (migrations run as the tables' owner, not
#                  through the proxy, whose role must not own tenant tables): an
#                  ActiveRecord::Migration run by ActiveRecord's Migrator (advisory lock,
#                  schema_migrations, DDL transaction) creates ar_notes with a tenant_id
#                  defaulting to current_setting('app.current_tenant'), ENABLE + FORCE
#                  RLS, a policy and grants; run down first when a previous mode left it
#   connect        one connection pool per tenant (an abstract class per token); the
#                  adapter's connect-time SETs (client_min_messages,
#                  standard_conforming_strings = on, intervalstyle) pass the guard
#   simple_query   connection.execute (a Query message)
#   parameterized  where(title: ...) (bind parameters: a named prepared statement) and
#                  where('title LIKE ?', ...) (quoted by ActiveRecord)
#   prepared       where(id: ...) 10 times: one statement in the adapter's statement pool
#   model          the Note model on the migrated table: create! (tenant_id from the
#                  column default, i.e. the proxy's context), update!, destroy!, each
#                  tenant sees only its notes, a note for the other tenant is refused
#   commit         transaction { create! }: seen by another session of tenant 1, not tenant 2
#   rollback       transaction { create!; raise ActiveRecord::Rollback }
#   serializable   transaction(isolation: :serializable) (Rails 6.1 sends BEGIN, then SET
#                  TRANSACTION ISOLATION LEVEL SERIALIZABLE) and the Rails 7.1+ form
#                  BEGIN ISOLATION LEVEL SERIALIZABLE: both serializable, right rows
#   statement_limit_evict  statement_limit 2: evictions send SQL DEALLOCATE, inside a
#                  transaction too, which goes on (the proxy answers it in transaction pooling)
#   isolation      two tenants' tokens: documents and tenants rows, exactly
#   concurrent     threads of both tenants sharing a pool per tenant with half as many
#                  connections as workers (transaction pooling: pinned sessions, so both
#                  pools together as many as the proxy's pool.size); model transactions
# ActiveRecord has no COPY API (raw_connection is ruby-pg: see pg_client.rb).
$LOAD_PATH.unshift(__dir__)
require 'common'
require 'active_record'

ActiveRecord::Base.logger = nil
ActiveRecord::Migration.verbose = false

ADMIN = {
  adapter: 'postgresql', host: ENV.fetch('PG_HOST', '127.0.0.1'), port: Integer(ENV.fetch('PG_PORT', '5432')),
  database: ENV.fetch('PROXY_DB', 'app'), username: ENV.fetch('PG_SUPERUSER', 'postgres'),
  password: ENV.fetch('PG_SUPERUSER_PASSWORD', ''), sslmode: 'disable'
}.freeze

# The adapter's connect-time session SETs (client_min_messages, standard_conforming_strings,
# intervalstyle) pin every ActiveRecord connection to its server connection in transaction
# pooling: the proxy's pool.size must hold all of them (two tenants' pools), as in session
# pooling. In the other modes: half as many connections as workers.
POOL = if MODE == 'transaction'
         [Integer(ENV.fetch('CLIENT_UPSTREAM_POOL_SIZE', '4')) / 2, 1].max
       else
         [WORKERS / 2, 1].max
       end

def tenant_config(tenant)
  p = conn_params(tenant)
  {
    adapter: 'postgresql', host: p[:host], port: p[:port], database: p[:dbname], username: p[:user],
    password: p[:password], sslmode: 'disable', connect_timeout: 10, pool: POOL,
    checkout_timeout: 30, prepared_statements: true
  }
end

# Migrations: ActiveRecord::Base, the owner, directly.
ActiveRecord::Base.establish_connection(ADMIN)

class CreateArNotes < ActiveRecord::Migration[6.1]
  def up
    create_table :ar_notes do |t|
      t.integer :tenant_id, null: false, default: -> { "(current_setting('app.current_tenant'))::integer" }
      t.text :body, null: false
      t.timestamps
    end
    add_foreign_key :ar_notes, :tenants, column: :tenant_id
    add_index :ar_notes, :tenant_id
    execute 'ALTER TABLE ar_notes ENABLE ROW LEVEL SECURITY'
    execute 'ALTER TABLE ar_notes FORCE ROW LEVEL SECURITY'
    execute <<~SQL
      CREATE POLICY ar_notes_tenant ON ar_notes
        USING (tenant_id = (current_setting('app.current_tenant', true))::integer)
        WITH CHECK (tenant_id = (current_setting('app.current_tenant', true))::integer)
    SQL
    # app_proxy through the proxy; alice and bob in the "direct" baseline mode.
    roles = select_values("SELECT rolname FROM pg_roles WHERE rolname IN ('app_proxy', 'alice', 'bob')")
    roles.each do |role|
      execute "GRANT SELECT, INSERT, UPDATE, DELETE ON ar_notes TO #{quote_table_name(role)}"
      execute "GRANT USAGE ON SEQUENCE ar_notes_id_seq TO #{quote_table_name(role)}"
    end
  end

  def down
    drop_table :ar_notes
  end
end

MIGRATION_VERSION = 2024_01_01_000001

def migrator(direction)
  migration = CreateArNotes.new('CreateArNotes', MIGRATION_VERSION)
  ActiveRecord::Migrator.new(direction, [migration], ActiveRecord::Base.connection.schema_migration)
end

def migrate
  admin = ActiveRecord::Base.connection
  migrator(:down).migrate if admin.table_exists?(:ar_notes)
  expect(!admin.table_exists?(:ar_notes), 'ar_notes left after migrating down')
  migrator(:up).migrate
  rls = admin.select_rows("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'ar_notes'")
  expect_eq(rls, [[true, true]], 'ar_notes (ENABLE, FORCE) row level security')
  expect_eq(ActiveRecord::SchemaMigration.all_versions, [MIGRATION_VERSION.to_s], 'schema_migrations')
  expect_eq(admin.select_value('SELECT count(*) FROM pg_policies WHERE tablename = $1', 'SQL', ['ar_notes']), 1,
            'policies on ar_notes')
end

# One connection pool per tenant: an abstract class holding that tenant's token, and
# the models on it.
MODELS = {}
[1, 2].each do |tenant|
  base = Class.new(ActiveRecord::Base) { self.abstract_class = true }
  Object.const_set("Tenant#{tenant}Record", base)
  doc = Class.new(base) { self.table_name = 'documents' }
  Object.const_set("Document#{tenant}", doc)
  note = Class.new(base) { self.table_name = 'ar_notes' }
  Object.const_set("Note#{tenant}", note)
  tenant_row = Class.new(base) { self.table_name = 'tenants' }
  Object.const_set("Tenant#{tenant}", tenant_row)
  MODELS[tenant] = { base: base, doc: doc, note: note, tenant: tenant_row }
end

def doc(tenant) = MODELS[tenant][:doc]
def note(tenant) = MODELS[tenant][:note]

def connect
  [1, 2].each do |tenant|
    base = MODELS[tenant][:base]
    base.establish_connection(tenant_config(tenant))
    expect_eq(base.connection.select_value('SELECT 1'), 1, "tenant #{tenant} SELECT 1")
  end
end

def simple_query
  rows = doc(1).connection.execute("SELECT current_setting('app.current_tenant'), count(*) FROM documents").values
  expect_eq(rows.map { |r| r.map(&:to_s) }, [%w[1 3]], '(app.current_tenant, visible documents)')
end

def parameterized
  expect_eq(doc(1).where(title: 'acme payroll').pluck(:tenant_id, :title), [[1, 'acme payroll']], 'where(title:)')
  expect_eq(doc(1).where(title: 'globex handbook').pluck(:title), [], "other tenant's title by bind")
  expect_eq(doc(1).where('title LIKE ?', 'acme%').pluck(:title).sort, TITLES[1], 'own titles')
  expect_eq(doc(1).where('title LIKE ?', 'globex%').pluck(:title), [], "other tenant's titles")
end

def prepared
  conn = doc(1).connection
  pool = conn.instance_variable_get(:@statements)
  doc(1).where(id: 0).pluck(:tenant_id, :title) # prepares the statement
  before = pool.length
  rows = (1..10).flat_map { |id| doc(1).where(id: id).pluck(:tenant_id, :title) }
  expect_eq(pool.length, before, 'statements in the adapter statement pool after 10 more executions')
  expect(before >= 1, 'no prepared statement in the adapter statement pool')
  own_rows_only(1, rows, 'prepared statement')
  expect_eq(rows.map(&:last).sort, TITLES[1], 'titles by id 1..10')
end

def model
  n1 = note(1).create!(body: "note of tenant 1 #{MODE}")
  n2 = note(2).create!(body: "note of tenant 2 #{MODE}")
  expect_eq(note(1).pluck(:tenant_id, :body), [[1, "note of tenant 1 #{MODE}"]], 'tenant 1 notes')
  expect_eq(note(2).pluck(:tenant_id, :body), [[2, "note of tenant 2 #{MODE}"]], 'tenant 2 notes')
  expect_eq(note(1).find_by(id: n2.id), nil, "tenant 1 finds tenant 2's note by id")
  n1.update!(body: 'edited')
  expect_eq(note(1).find(n1.id).body, 'edited', 'updated body')
  expect_eq(note(2).where(id: n1.id).update_all(body: 'hijacked'), 0, "tenant 2 updates tenant 1's note")
  begin
    note(1).create!(tenant_id: 2, body: 'forged by tenant 1')
  rescue ActiveRecord::StatementInvalid => e
    expect(e.cause.is_a?(PG::InsufficientPrivilege), "forged note refused with #{e.cause.class}")
  else
    raise CheckFailed, 'tenant 1 created a note for tenant 2'
  end
  n1.destroy!
  n2.destroy!
  expect_eq([note(1).count, note(2).count], [0, 0], 'notes after destroy!')
end

# count in another session of the same tenant: another thread checks out another connection.
def count_elsewhere(model, title)
  Thread.new { model.connection_pool.with_connection { model.where(title: title).count } }.value
end

def commit
  title = "activerecord commit #{MODE}"
  doc(1).transaction { doc(1).create!(tenant_id: 1, title: title) }
  expect_eq(count_elsewhere(doc(1), title), 1, "committed row seen by tenant 1's other session")
  expect_eq(doc(2).where(title: title).count, 0, 'committed row seen by tenant 2')
ensure
  doc(1).where(title: title).delete_all
end

def rollback
  title = "activerecord rollback #{MODE}"
  doc(1).transaction do
    doc(1).create!(tenant_id: 1, title: title)
    expect_eq(doc(1).where(title: title).count, 1, 'row inside the transaction')
    raise ActiveRecord::Rollback
  end
  expect_eq(doc(1).where(title: title).count, 0, 'row after the rollback')
end

def serializable
  conn = doc(2).connection
  doc(2).transaction(isolation: :serializable) do
    expect_eq(conn.select_value('SHOW transaction_isolation'), 'serializable', 'isolation of transaction(isolation:)')
    expect_eq(doc(2).order(:title).pluck(:title), TITLES[2], 'titles in the serializable transaction')
  end
  conn.execute('BEGIN ISOLATION LEVEL SERIALIZABLE') # Rails 7.1+ (begin_isolated_db_transaction)
  begin
    expect_eq(conn.select_value('SHOW transaction_isolation'), 'serializable', 'isolation of BEGIN ISOLATION LEVEL')
    expect_eq(conn.select_value("SELECT current_setting('app.current_tenant')"), '2', 'tenant in the block')
    expect_eq(doc(2).order(:title).pluck(:title), TITLES[2], 'titles in the BEGIN ISOLATION LEVEL block')
  ensure
    conn.execute('COMMIT')
  end
  expect_eq(conn.select_value('SHOW transaction_isolation'), 'read committed', 'isolation after the block')
end

# statement_limit: 2 and more distinct statements: the adapter's statement pool evicts
# the oldest and sends SQL `DEALLOCATE a1`. In transaction pooling the statement lives
# under a proxy name on the server and the proxy answers that DEALLOCATE itself, so
# evictions inside a transaction leave it going, in every mode. Checked exactly.
class LimitedRecord < ActiveRecord::Base
  self.abstract_class = true
end

class LimitedDocument < LimitedRecord
  self.table_name = 'documents'
end

def statement_limit_evict
  LimitedRecord.establish_connection(tenant_config(1).merge(statement_limit: 2, pool: 1))
  # A distinct statement text per k (raw SQL fragments would make it unpreparable).
  columns = [[], [:id], [:tenant_id], [:body], [:id, :tenant_id], [:id, :body]]
  lookups = lambda do |k|
    LimitedDocument.where(title: TITLES[1][k % 3]).pluck(:title, *columns[k]).map { |r| Array(r).first }
  end
  3.times { |k| expect_eq(lookups.call(k), [TITLES[1][k]], "lookup #{k} outside a transaction") }
  expect_eq(LimitedRecord.connection.instance_variable_get(:@statements).length, 2, 'statements kept')
  got = begin
    LimitedDocument.transaction do
      (3..5).map { |k| lookups.call(k) }.flatten # prepared in the transaction: evictions
    end
  rescue ActiveRecord::StatementInvalid => e
    e.cause.class.name
  end
  expect_eq(got, TITLES[1], 'statements that evict others inside a transaction')
  expect_eq(LimitedDocument.count, 3, 'count after the transaction')
ensure
  LimitedRecord.remove_connection
end

def isolation
  [1, 2].each do |tenant|
    rows = doc(tenant).pluck(:tenant_id, :title)
    own_rows_only(tenant, rows, 'documents')
    expect_eq(rows.map(&:last).sort, TITLES[tenant], "tenant #{tenant} titles")
    expect_eq(MODELS[tenant][:tenant].pluck(:id), [tenant], "tenant #{tenant} tenants rows")
  end
end

def concurrent
  MODELS.each_value { |m| m[:base].connection_pool.release_connection } # the main thread's
  run_workers do |i, tenant|
    model = doc(tenant)
    TXNS.times do |n|
      rows = nil
      model.connection_pool.with_connection do # a connection per transaction, from the pool
        model.transaction do
          model.create!(tenant_id: tenant, title: "w#{i}") if n.odd?
          rows = model.pluck(:tenant_id, :title)
          raise ActiveRecord::Rollback if n.odd?
        end
      end
      own_rows_only(tenant, rows, "worker #{i} txn #{n}")
    end
  end
end

checks = Checks.new('activerecord')
checks.run('migration') { migrate }
checks.run('connect') { connect }
checks.exit! if checks.failed.positive?
checks.run('simple_query') { simple_query }
checks.run('parameterized') { parameterized }
checks.run('prepared') { prepared }
checks.run('model') { model }
checks.run('commit') { commit }
checks.run('rollback') { rollback }
checks.run('serializable') { serializable }
%w[copy_in copy_out].each { |c| checks.skip(c, "ActiveRecord has no COPY API (ruby-pg's copy_data is checked by ruby-pg)") }
if MODE == 'transaction'
  checks.run('statement_limit_evict') { statement_limit_evict }
else
  checks.run('statement_limit_evict') { statement_limit_evict }
end
checks.run('isolation') { isolation }
checks.run('concurrent') { concurrent }
ActiveRecord::Base.connection_handler.clear_all_connections!
checks.exit!
