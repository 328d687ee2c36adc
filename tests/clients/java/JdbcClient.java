// pgjdbc (Debian's libpostgresql-jdbc-java) through rlsproxy.
//
// Checks: simple query (Statement with preferQueryMode=simple), parameterized query
// (PreparedStatement), a PreparedStatement executed 10 times with
// prepareThreshold=1 (a named server-side statement from the first execution),
// commit and rollback (setAutoCommit(false): pgjdbc sends BEGIN itself), COPY in/out
// with CopyManager (temp table dropped at commit; RLS applies to COPY (SELECT ...)
// TO STDOUT), tenant isolation with two tokens, and concurrent workers of both
// tenants (threads, each its own connection). Prints PASS/FAIL lines like
// tests/clients/py/common.py.

import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;

public class JdbcClient {
    static final String MODE = env("RLS_MODE", "session");
    static final int WORKERS = Integer.parseInt(env("CLIENT_WORKERS", "4"));
    static final int TXNS = Integer.parseInt(env("CLIENT_TXNS", "100"));
    static final Map<Integer, Set<String>> TITLES = Map.of(
            1, Set.of("acme roadmap", "acme payroll", "acme onboarding"),
            2, Set.of("globex merger plan", "globex handbook"));
    static final String DOCS = "SELECT tenant_id, title FROM documents";
    static int failed = 0;

    interface Check {
        void run() throws Exception;
    }

    record Row(int tenant, String title) {}

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static void check(String name, Check body) {
        try {
            body.run();
            System.out.println("PASS " + MODE + " pgjdbc " + name);
        } catch (Throwable e) {
            failed++;
            String reason = (e.getClass().getSimpleName() + ": " + e.getMessage()).replaceAll("\\s+", " ");
            System.out.println("FAIL " + MODE + " pgjdbc " + name + ": " + reason.substring(0, Math.min(400, reason.length())));
            if (System.getenv("CLIENT_VERBOSE") != null) e.printStackTrace();
        }
        System.out.flush();
    }

    static Connection connect(int tenant) throws SQLException {
        return connect(tenant, "");
    }

    static Connection connect(int tenant, String params) throws SQLException {
        String url = "jdbc:postgresql://" + env("PROXY_HOST", "127.0.0.1") + ":" + env("PROXY_PORT", "6432") + "/"
                + env("PROXY_DB", "app") + "?sslmode=disable&prepareThreshold=1&connectTimeout=10" + params;
        return DriverManager.getConnection(url, tenant == 1 ? "alice" : "bob", System.getenv("TOKEN_T" + tenant));
    }

    static void expectEq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + got + ", want " + want);
    }

    static List<Row> rows(ResultSet rs) throws SQLException {
        List<Row> out = new ArrayList<>();
        while (rs.next()) out.add(new Row(rs.getInt(1), rs.getString(2)));
        return out;
    }

    static Set<String> titles(List<Row> rows) {
        Set<String> out = new TreeSet<>();
        for (Row r : rows) out.add(r.title());
        return out;
    }

    static void ownRowsOnly(int tenant, List<Row> rows, String what) {
        for (Row r : rows) {
            if (r.tenant() != tenant) throw new AssertionError(what + ": tenant " + tenant + " saw foreign row " + r);
        }
        if (!titles(rows).containsAll(TITLES.get(tenant))) {
            throw new AssertionError(what + ": tenant " + tenant + " misses its rows, saw " + titles(rows));
        }
    }

    static long count(Connection c, String title) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM documents WHERE title = ?")) {
            ps.setString(1, title);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }

    static void insert(Connection c, int tenant, String title) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO documents (tenant_id, title) VALUES (?, ?)")) {
            ps.setInt(1, tenant);
            ps.setString(2, title);
            ps.executeUpdate();
        }
    }

    static void simpleQuery() throws SQLException {
        // pgjdbc's Statement uses the extended protocol by default: ask for a real Query message.
        try (Connection c = connect(1, "&preferQueryMode=simple");
             Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT current_setting('app.current_tenant'), count(*) FROM documents")) {
            rs.next();
            expectEq(rs.getString(1) + "," + rs.getLong(2), "1,3", "(app.current_tenant, visible documents)");
        }
    }

    static void parameterized(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT tenant_id, title FROM documents WHERE title LIKE ?")) {
            ps.setString(1, "acme%");
            try (ResultSet rs = ps.executeQuery()) {
                expectEq(titles(rows(rs)), new TreeSet<>(TITLES.get(1)), "own titles");
            }
            ps.setString(1, "globex%");
            try (ResultSet rs = ps.executeQuery()) {
                expectEq(rows(rs), List.of(), "other tenant's titles");
            }
        }
    }

    static void prepared(Connection c) throws SQLException {
        List<Row> seen = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(DOCS + " WHERE id = ?")) {
            for (int id = 1; id <= 10; id++) {
                ps.setInt(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    seen.addAll(rows(rs));
                }
            }
            expectEq(ps.unwrap(PGStatement.class).isUseServerPrepare(), true, "server-side prepared");
        }
        ownRowsOnly(1, seen, "prepared statement");
        expectEq(titles(seen), new TreeSet<>(TITLES.get(1)), "titles by id 1..10");
    }

    static void commit(Connection c, Connection other2) throws SQLException {
        String title = "pgjdbc commit " + MODE;
        c.setAutoCommit(false);
        insert(c, 1, title);
        c.commit();
        c.setAutoCommit(true);
        try {
            try (Connection other1 = connect(1)) { // another session of tenant 1 sees the committed row
                expectEq(count(other1, title), 1L, "committed row seen by tenant 1's other session");
            }
            expectEq(count(other2, title), 0L, "committed row seen by tenant 2");
        } finally {
            try (PreparedStatement ps = c.prepareStatement("DELETE FROM documents WHERE title = ?")) {
                ps.setString(1, title);
                ps.executeUpdate();
            }
        }
    }

    static void rollback(Connection c) throws SQLException {
        String title = "pgjdbc rollback " + MODE;
        c.setAutoCommit(false);
        try {
            insert(c, 1, title);
            expectEq(count(c, title), 1L, "row inside the transaction");
            c.rollback();
            expectEq(count(c, title), 0L, "row after rollback");
        } finally {
            c.rollback();
            c.setAutoCommit(true);
        }
    }

    static void copyIn(Connection c) throws Exception {
        StringBuilder data = new StringBuilder();
        List<String> want = new ArrayList<>();
        for (int i = 1; i <= 100; i++) {
            data.append(i).append('\t').append("row ").append(i).append(" ünïcødé\n");
            want.add(i + "|row " + i + " ünïcødé");
        }
        c.setAutoCommit(false);
        try {
            exec(c, "CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP");
            long n = c.unwrap(PGConnection.class).getCopyAPI()
                    .copyIn("COPY copy_t (id, title) FROM STDIN", new StringReader(data.toString()));
            expectEq(n, 100L, "rows copied in");
            List<String> got = new ArrayList<>();
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT id, title FROM copy_t ORDER BY id")) {
                while (rs.next()) got.add(rs.getInt(1) + "|" + rs.getString(2));
            }
            expectEq(got, want, "copied rows");
            c.commit();
        } finally {
            c.rollback();
            c.setAutoCommit(true);
        }
    }

    static void copyOut(Connection c) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        c.unwrap(PGConnection.class).getCopyAPI().copyOut("COPY (" + DOCS + " ORDER BY id) TO STDOUT", out);
        List<Row> got = new ArrayList<>();
        for (String line : out.toString(StandardCharsets.UTF_8).split("\n")) {
            if (line.isEmpty()) continue;
            String[] f = line.split("\t");
            got.add(new Row(Integer.parseInt(f[0]), f[1]));
        }
        ownRowsOnly(1, got, "COPY TO");
        expectEq(got.size(), 3, "rows copied out");
    }

    static void isolation(Connection c1, Connection c2) throws SQLException {
        for (int tenant : new int[] {1, 2}) {
            Connection c = tenant == 1 ? c1 : c2;
            try (Statement st = c.createStatement()) {
                List<Row> docs;
                try (ResultSet rs = st.executeQuery(DOCS)) {
                    docs = rows(rs);
                }
                ownRowsOnly(tenant, docs, "documents");
                expectEq(titles(docs), new TreeSet<>(TITLES.get(tenant)), "tenant " + tenant + " titles");
                List<Integer> ids = new ArrayList<>();
                try (ResultSet rs = st.executeQuery("SELECT id FROM tenants")) {
                    while (rs.next()) ids.add(rs.getInt(1));
                }
                expectEq(ids, List.of(tenant), "tenant " + tenant + " tenants rows");
            }
        }
        try {
            insert(c1, 2, "forged by tenant 1");
        } catch (SQLException e) {
            expectEq(e.getSQLState(), "42501", "SQLSTATE of a forged insert");
            return;
        }
        throw new AssertionError("tenant 1 inserted a row for tenant 2");
    }

    static void concurrent() throws Exception {
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < WORKERS; w++) {
            final int i = w;
            final int tenant = 1 + w % 2;
            threads.add(new Thread(() -> {
                try (Connection c = connect(tenant)) {
                    c.setAutoCommit(false);
                    try (PreparedStatement docs = c.prepareStatement(DOCS)) {
                        for (int n = 0; n < TXNS; n++) {
                            if (n % 2 == 1) insert(c, tenant, "w" + i);
                            List<Row> seen;
                            try (ResultSet rs = docs.executeQuery()) {
                                seen = rows(rs);
                            }
                            if (n % 2 == 1) c.rollback(); else c.commit();
                            ownRowsOnly(tenant, seen, "worker " + i + " txn " + n);
                        }
                    }
                } catch (Throwable e) {
                    errors.add("worker " + i + " (tenant " + tenant + "): " + e);
                }
            }));
        }
        for (Thread t : threads) t.start();
        for (Thread t : threads) t.join();
        if (!errors.isEmpty()) throw new AssertionError(String.join("; ", errors.subList(0, Math.min(3, errors.size()))));
    }

    public static void main(String[] args) throws Exception {
        Connection[] conns = new Connection[3];
        check("connect", () -> {
            conns[1] = connect(1);
            conns[2] = connect(2);
        });
        if (conns[2] == null) System.exit(1);
        Connection c1 = conns[1];
        check("simple_query", JdbcClient::simpleQuery);
        check("parameterized", () -> parameterized(c1));
        check("prepared", () -> prepared(c1));
        check("commit", () -> commit(c1, conns[2]));
        check("rollback", () -> rollback(c1));
        check("copy_in", () -> copyIn(c1));
        check("copy_out", () -> copyOut(c1));
        check("isolation", () -> isolation(c1, conns[2]));
        check("concurrent", JdbcClient::concurrent);
        conns[1].close();
        conns[2].close();
        System.exit(failed > 0 ? 1 : 0);
    }
}
