// pgx v4 (Debian's golang-github-jackc-pgx-v4-dev) through rlsproxy.
//
// Checks: simple query (QuerySimpleProtocol: a Query message), parameterized query
// (pgx's statement cache: a named statement per SQL text, prepared on first use),
// an explicitly named statement (conn.Prepare) reused 10 times, the statement cache
// reused across transactions, the statement cache evicting (capacity 2: pgx sends SQL
// `deallocate <name>` for the evicted statement), statement_cache_mode=describe
// (unnamed statements), BEGIN/COMMIT and ROLLBACK (conn.Begin), COPY in with CopyFrom
// (binary COPY into a temp table dropped at commit), COPY out (pgconn.CopyTo; RLS
// applies to COPY (SELECT ...) TO STDOUT), tenant isolation with two tokens, and
// concurrent workers of both tenants (goroutines sharing one pgxpool per tenant with
// half as many connections as workers). Prints PASS/FAIL lines like
// tests/clients/py/common.py.
//
// Built offline against Debian's GOPATH tree: GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

var (
	mode    = env("RLS_MODE", "session")
	workers = atoi(env("CLIENT_WORKERS", "4"))
	txns    = atoi(env("CLIENT_TXNS", "100"))
	titles  = map[int][]string{
		1: {"acme onboarding", "acme payroll", "acme roadmap"},
		2: {"globex handbook", "globex merger plan"},
	}
	failed = 0
	ctx    = context.Background()
)

const docs = "SELECT tenant_id, title FROM documents"

type row struct {
	Tenant int
	Title  string
}

func env(name, dflt string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return dflt
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

var spaces = regexp.MustCompile(`\s+`)

func check(name string, body func() error) {
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return body()
	}()
	if err == nil {
		fmt.Printf("PASS %s pgx %s\n", mode, name)
		return
	}
	failed++
	reason := spaces.ReplaceAllString(fmt.Sprintf("%T: %v", err, err), " ")
	if len(reason) > 400 {
		reason = reason[:400]
	}
	fmt.Printf("FAIL %s pgx %s: %s\n", mode, name, reason)
}

func connString(tenant int, extra string) string {
	user := map[int]string{1: "alice", 2: "bob"}[tenant]
	return fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s sslmode=disable connect_timeout=10 %s",
		env("PROXY_HOST", "127.0.0.1"), env("PROXY_PORT", "6432"), env("PROXY_DB", "app"), user,
		os.Getenv(fmt.Sprintf("TOKEN_T%d", tenant)), extra)
}

func connect(tenant int, extra string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, connString(tenant, extra))
}

func expectEq(got, want interface{}, what string) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s: got %v, want %v", what, got, want)
	}
	return nil
}

func titlesOf(rows []row) []string {
	set := map[string]bool{}
	for _, r := range rows {
		set[r.Title] = true
	}
	out := []string{}
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func ownRowsOnly(tenant int, rows []row, what string) error {
	for _, r := range rows {
		if r.Tenant != tenant {
			return fmt.Errorf("%s: tenant %d saw foreign row %v", what, tenant, r)
		}
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Title] = true
	}
	for _, t := range titles[tenant] {
		if !seen[t] {
			return fmt.Errorf("%s: tenant %d misses its row %q", what, tenant, t)
		}
	}
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...interface{}) (pgx.Rows, error)
}

func queryRows(q querier, sql string, args ...interface{}) ([]row, error) {
	rs, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := []row{}
	for rs.Next() {
		var r row
		var t int32
		if err := rs.Scan(&t, &r.Title); err != nil {
			return nil, err
		}
		r.Tenant = int(t)
		out = append(out, r)
	}
	return out, rs.Err()
}

func count(c *pgx.Conn, title string) (int64, error) {
	var n int64
	err := c.QueryRow(ctx, "SELECT count(*) FROM documents WHERE title = $1", title).Scan(&n)
	return n, err
}

func simpleQuery(c *pgx.Conn) error {
	var tenant string
	var n int64
	err := c.QueryRow(ctx, "SELECT current_setting('app.current_tenant'), count(*) FROM documents",
		pgx.QuerySimpleProtocol(true)).Scan(&tenant, &n)
	if err != nil {
		return err
	}
	return expectEq(fmt.Sprintf("%s,%d", tenant, n), "1,3", "(app.current_tenant, visible documents)")
}

func parameterized(c *pgx.Conn) error {
	sql := docs + " WHERE title LIKE $1 ORDER BY id"
	own, err := queryRows(c, sql, "acme%")
	if err != nil {
		return err
	}
	if err := expectEq(titlesOf(own), titles[1], "own titles"); err != nil {
		return err
	}
	other, err := queryRows(c, sql, "globex%")
	if err != nil {
		return err
	}
	return expectEq(other, []row{}, "other tenant's titles")
}

// An explicitly named statement, executed by name 10 times.
func prepared(c *pgx.Conn) error {
	if _, err := c.Prepare(ctx, "doc_by_id", docs+" WHERE id = $1"); err != nil {
		return err
	}
	seen := []row{}
	for id := 1; id <= 10; id++ {
		rows, err := queryRows(c, "doc_by_id", id)
		if err != nil {
			return err
		}
		seen = append(seen, rows...)
	}
	if err := ownRowsOnly(1, seen, "prepared statement"); err != nil {
		return err
	}
	return expectEq(titlesOf(seen), titles[1], "titles by id 1..10")
}

// pgx's statement cache: the same SQL text in 10 transactions, one cached statement.
func statementCache(c *pgx.Conn) error {
	sql := docs + " WHERE id = $1 AND title <> 'cache'"
	seen := []row{}
	cached := -1
	for id := 1; id <= 10; id++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		rows, err := queryRows(tx, sql, id)
		if err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		seen = append(seen, rows...)
		// One more cached statement after the first execution, no more after the others.
		if cached < 0 {
			cached = c.StatementCache().Len()
		} else if err := expectEq(c.StatementCache().Len(), cached, fmt.Sprintf("cached statements after execution %d", id)); err != nil {
			return err
		}
	}
	if err := expectEq(c.StatementCache().Mode(), 0, "cache mode (ModePrepare)"); err != nil {
		return err
	}
	return expectEq(titlesOf(seen), titles[1], "titles by id 1..10")
}

// statement_cache_capacity=2 and 4 texts in turn: from the third query on, each one
// evicts the oldest cached statement, and pgx sends SQL `deallocate <name>` for it
// before preparing the new text. In transaction pooling the statement lives under a
// proxy name on the server and the proxy answers that DEALLOCATE itself: no query
// fails, in any mode (each failure with 26000 is counted, and must not happen).
func statementCacheEvict() error {
	c, err := connect(1, "statement_cache_capacity=2")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	refused := 0
	for round := 0; round < 3; round++ {
		for k := 0; k < 4; k++ {
			var n int64
			sql := fmt.Sprintf("SELECT count(*) + %d FROM documents WHERE id > $1", k)
			err := c.QueryRow(ctx, sql, 0).Scan(&n)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "26000" &&
				strings.HasPrefix(pgErr.Message, `prepared statement "lrupsc_`) {
				refused++
				err = c.QueryRow(ctx, sql, 0).Scan(&n)
			}
			if err != nil {
				return fmt.Errorf("round %d, text %d: %w", round, k, err)
			}
			if err := expectEq(n, int64(3+k), fmt.Sprintf("round %d, text %d", round, k)); err != nil {
				return err
			}
		}
	}
	if err := expectEq(refused, 0, "evictions whose SQL deallocate failed with 26000"); err != nil {
		return err
	}
	return expectEq(c.StatementCache().Len(), 2, "cached statements")
}

// statement_cache_mode=describe: unnamed statements, described once per text.
func describeMode() error {
	c, err := connect(2, "statement_cache_mode=describe")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	seen := []row{}
	for id := 1; id <= 10; id++ {
		rows, err := queryRows(c, docs+" WHERE id = $1", id)
		if err != nil {
			return err
		}
		seen = append(seen, rows...)
	}
	if err := ownRowsOnly(2, seen, "describe mode"); err != nil {
		return err
	}
	return expectEq(titlesOf(seen), titles[2], "titles by id 1..10")
}

func commit(c, other2 *pgx.Conn) (err error) {
	title := "pgx commit " + mode
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO documents (tenant_id, title) VALUES (1, $1)", title); err != nil {
		tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	defer func() {
		if _, e := c.Exec(ctx, "DELETE FROM documents WHERE title = $1", title); e != nil && err == nil {
			err = e
		}
	}()
	other1, err := connect(1, "") // another session of tenant 1 sees the committed row
	if err != nil {
		return err
	}
	defer other1.Close(ctx)
	n, err := count(other1, title)
	if err != nil {
		return err
	}
	if err := expectEq(n, int64(1), "committed row seen by tenant 1's other session"); err != nil {
		return err
	}
	n, err = count(other2, title)
	if err != nil {
		return err
	}
	return expectEq(n, int64(0), "committed row seen by tenant 2")
}

func rollback(c *pgx.Conn) error {
	title := "pgx rollback " + mode
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO documents (tenant_id, title) VALUES (1, $1)", title); err != nil {
		return err
	}
	var n int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM documents WHERE title = $1", title).Scan(&n); err != nil {
		return err
	}
	if err := expectEq(n, int64(1), "row inside the transaction"); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	n, err = count(c, title)
	if err != nil {
		return err
	}
	return expectEq(n, int64(0), "row after ROLLBACK")
}

func copyRows() [][]interface{} {
	out := [][]interface{}{}
	for i := 1; i <= 100; i++ {
		out = append(out, []interface{}{int32(i), fmt.Sprintf("row %d ünïcødé", i)})
	}
	return out
}

func copyIn(c *pgx.Conn) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP"); err != nil {
		return err
	}
	want := copyRows()
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"copy_t"}, []string{"id", "title"}, pgx.CopyFromRows(want))
	if err != nil {
		return err
	}
	if err := expectEq(n, int64(100), "rows copied in"); err != nil {
		return err
	}
	rs, err := tx.Query(ctx, "SELECT id, title FROM copy_t ORDER BY id")
	if err != nil {
		return err
	}
	got := [][]interface{}{}
	for rs.Next() {
		var id int32
		var title string
		if err := rs.Scan(&id, &title); err != nil {
			rs.Close()
			return err
		}
		got = append(got, []interface{}{id, title})
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return err
	}
	if err := expectEq(got, want, "copied rows"); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func copyOut(c *pgx.Conn) error {
	var buf bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY ("+docs+" ORDER BY id) TO STDOUT")
	if err != nil {
		return err
	}
	got := []row{}
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		f := strings.Split(line, "\t")
		got = append(got, row{atoi(f[0]), f[1]})
	}
	if err := ownRowsOnly(1, got, "COPY TO"); err != nil {
		return err
	}
	if err := expectEq(tag.RowsAffected(), int64(3), "COPY command tag"); err != nil {
		return err
	}
	return expectEq(len(got), 3, "rows copied out")
}

func isolation(conns map[int]*pgx.Conn) error {
	for _, tenant := range []int{1, 2} {
		c := conns[tenant]
		rows, err := queryRows(c, docs)
		if err != nil {
			return err
		}
		if err := ownRowsOnly(tenant, rows, "documents"); err != nil {
			return err
		}
		if err := expectEq(titlesOf(rows), titles[tenant], fmt.Sprintf("tenant %d titles", tenant)); err != nil {
			return err
		}
		ids := []int32{}
		rs, err := c.Query(ctx, "SELECT id FROM tenants")
		if err != nil {
			return err
		}
		for rs.Next() {
			var id int32
			rs.Scan(&id)
			ids = append(ids, id)
		}
		rs.Close()
		if err := expectEq(ids, []int32{int32(tenant)}, fmt.Sprintf("tenant %d tenants rows", tenant)); err != nil {
			return err
		}
	}
	_, err := conns[1].Exec(ctx, "INSERT INTO documents (tenant_id, title) VALUES ($1, 'forged by tenant 1')", 2)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return nil
	}
	return fmt.Errorf("a forged insert for tenant 2: got %v, want SQLSTATE 42501", err)
}

func concurrent() error {
	pools := map[int]*pgxpool.Pool{}
	for _, tenant := range []int{1, 2} {
		cfg, err := pgxpool.ParseConfig(connString(tenant, ""))
		if err != nil {
			return err
		}
		cfg.MaxConns = int32(workers / 2)
		if cfg.MaxConns < 1 {
			cfg.MaxConns = 1
		}
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
		p, err := pgxpool.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer p.Close()
		pools[tenant] = p
	}
	var mu sync.Mutex
	errs := []string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(i, tenant int) {
			defer wg.Done()
			err := func() error {
				for n := 0; n < txns; n++ {
					tx, err := pools[tenant].Begin(ctx)
					if err != nil {
						return err
					}
					if n%2 == 1 {
						if _, err := tx.Exec(ctx, "INSERT INTO documents (tenant_id, title) VALUES ($1, $2)", tenant, fmt.Sprintf("w%d", i)); err != nil {
							tx.Rollback(ctx)
							return err
						}
					}
					rows, err := queryRows(tx, docs)
					if err != nil {
						tx.Rollback(ctx)
						return err
					}
					if n%2 == 1 {
						err = tx.Rollback(ctx)
					} else {
						err = tx.Commit(ctx)
					}
					if err != nil {
						return err
					}
					if err := ownRowsOnly(tenant, rows, fmt.Sprintf("worker %d txn %d", i, n)); err != nil {
						return err
					}
				}
				return nil
			}()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("worker %d (tenant %d): %v", i, tenant, err))
				mu.Unlock()
			}
		}(w, 1+w%2)
	}
	wg.Wait()
	if len(errs) > 3 {
		errs = errs[:3]
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func main() {
	conns := map[int]*pgx.Conn{}
	check("connect", func() error {
		for _, t := range []int{1, 2} {
			c, err := connect(t, "")
			if err != nil {
				return err
			}
			conns[t] = c
		}
		return nil
	})
	if len(conns) < 2 {
		os.Exit(1)
	}
	c1 := conns[1]
	check("simple_query", func() error { return simpleQuery(c1) })
	check("parameterized", func() error { return parameterized(c1) })
	check("prepared", func() error { return prepared(c1) })
	check("statement_cache", func() error { return statementCache(c1) })
	if mode == "transaction" {
		check("statement_cache_evict", statementCacheEvict)
	} else {
		check("statement_cache_evict", statementCacheEvict)
	}
	check("describe_mode", describeMode)
	check("commit", func() error { return commit(c1, conns[2]) })
	check("rollback", func() error { return rollback(c1) })
	check("copy_in", func() error { return copyIn(c1) })
	check("copy_out", func() error { return copyOut(c1) })
	check("isolation", func() error { return isolation(conns) })
	check("concurrent", concurrent)
	for _, c := range conns {
		c.Close(ctx)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
