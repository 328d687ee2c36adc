# Shared by the Ruby client checks of tests/clients/run.sh (ruby-pg, ActiveRecord).
#
# Reads the environment run.sh sets (proxy address, one token per tenant, pool mode),
# knows the rows each tenant must see (migrations/0002 seed data) and prints one result
# line per check, like tests/clients/py/common.py:
# `PASS|FAIL|SKIP <mode> <driver> <check>[: <reason>]`.

MODE = ENV.fetch('RLS_MODE', 'session')
WORKERS = Integer(ENV.fetch('CLIENT_WORKERS', '4'))
TXNS = Integer(ENV.fetch('CLIENT_TXNS', '100'))
USERS = { 1 => 'alice', 2 => 'bob' }.freeze # only logged by the proxy: the tenant comes from the token
TOKENS = { 1 => ENV.fetch('TOKEN_T1', ''), 2 => ENV.fetch('TOKEN_T2', '') }.freeze
TITLES = {
  1 => ['acme onboarding', 'acme payroll', 'acme roadmap'],
  2 => ['globex handbook', 'globex merger plan'],
}.freeze
DOCS = 'SELECT tenant_id, title FROM documents'
COPY_ROWS = (1..100).map { |i| [i, "row #{i} ünïcødé"] }.freeze

def conn_params(tenant)
  {
    host: ENV.fetch('PROXY_HOST', '127.0.0.1'), port: Integer(ENV.fetch('PROXY_PORT', '6432')),
    dbname: ENV.fetch('PROXY_DB', 'app'), user: USERS.fetch(tenant), password: TOKENS.fetch(tenant),
    sslmode: 'disable', connect_timeout: 10, application_name: 'rlsproxy-client-matrix'
  }
end

class Checks
  attr_reader :failed

  def initialize(driver)
    @driver = driver
    @failed = 0
  end

  def line(word, check, reason = nil)
    text = "#{word} #{MODE} #{@driver} #{check}"
    text += ': ' + reason.to_s.split.join(' ')[0, 400] if reason
    puts text
    $stdout.flush
  end

  def run(check)
    yield
  rescue Exception => e # rubocop:disable Lint/RescueException - every failure is a result line
    @failed += 1
    line('FAIL', check, "#{e.class}: #{e.message}")
    warn e.full_message if ENV['CLIENT_VERBOSE']
  else
    line('PASS', check)
  end

  def skip(check, reason)
    line('SKIP', check, reason)
  end

  def exit!
    Kernel.exit(@failed.zero? ? 0 : 1)
  end
end

class CheckFailed < StandardError; end

def expect(cond, message)
  raise CheckFailed, message unless cond
end

def expect_eq(got, want, what)
  raise CheckFailed, "#{what}: got #{got.inspect}, want #{want.inspect}" unless got == want
end

# rows: [tenant_id, title] pairs: every one is the tenant's own, none of its titles is missing.
def own_rows_only(tenant, rows, what, titles = TITLES)
  foreign = rows.reject { |t, _| t == tenant }
  raise CheckFailed, "#{what}: tenant #{tenant} saw foreign rows #{foreign.first(3).inspect}" unless foreign.empty?
  missing = titles.fetch(tenant) - rows.map { |_, title| title }
  raise CheckFailed, "#{what}: tenant #{tenant} misses its rows #{missing.inspect}" unless missing.empty?
end

# Runs the block with (worker index, tenant) in one thread per worker, tenants alternating,
# all at once; fails naming the first three workers that raised.
def run_workers
  errors = Queue.new
  threads = (0...WORKERS).map do |i|
    tenant = 1 + i % 2
    Thread.new do
      yield i, tenant
    rescue Exception => e # rubocop:disable Lint/RescueException
      errors << "worker #{i} (tenant #{tenant}): #{e.class}: #{e.message}"
    end
  end
  threads.each(&:join)
  all = []
  all << errors.pop until errors.empty?
  raise CheckFailed, all.first(3).join('; ') unless all.empty?
end
