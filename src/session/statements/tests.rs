use super::*;

fn parse(name: &str, sql: &str) -> Bytes {
    message(b'P', &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0", &[0, 0]])
}

fn bind(name: &str) -> Bytes {
    message(b'B', &[b"\0", name.as_bytes(), b"\0", &[0, 0, 0, 0, 0, 0]])
}

fn owners(out: &[Out]) -> Vec<String> {
    out.iter().map(|o| format!("{}:{:?}", o.bytes[0] as char, o.owner)).collect()
}

#[test]
fn prepares_on_demand_under_shared_names() {
    let (mut a, mut b) = (ClientStatements::default(), ClientStatements::default());
    let mut conn = StatementCache::default();
    let out = a.translate(parse("s1", "select 1"), &mut conn, 10, false).expect("parse");
    assert_eq!(out.len(), 3, "Close, Parse, Describe: {:?}", owners(&out));
    assert!(matches!(out[1].owner, Owner::ClientParse { .. }));
    // Another client with the same text on the same connection: the same server name.
    let out = b.translate(parse("x", "select 1"), &mut conn, 10, false).expect("parse");
    assert!(matches!(&out[1].owner, Owner::ClientParse { server, .. } if server == &server_name(b"select 1\0\0\0")));
    // On another connection, a Bind prepares it first, and names the server statement.
    let mut other = StatementCache::default();
    let out = a.translate(bind("s1"), &mut other, 10, false).expect("bind");
    assert!(matches!(out[1].owner, Owner::Prepare { .. }));
    let bound = frontend::bound_statement(codec::body(&out[2].bytes)).map(<[u8]>::to_vec);
    assert_eq!(bound, Some(server_name(&parse("s1", "select 1")[8..]).into_bytes()));
    // Unknown and duplicate names get the server's errors.
    assert_eq!(a.translate(bind("nope"), &mut conn, 10, false).err().map(|e| e.code), Some("26000".into()));
    assert_eq!(a.translate(parse("s1", "select 2"), &mut conn, 10, false).err().map(|e| e.code), Some("42P05".into()));
}

#[test]
fn a_failed_parse_forgets_the_name() {
    let mut a = ClientStatements::default();
    let mut conn = StatementCache::default();
    let out = a.translate(parse("s1", "selec 1"), &mut conn, 10, false).expect("parse");
    let owner = out.into_iter().nth(1).map(|o| o.owner).expect("owner");
    a.failed(&owner, &mut conn);
    assert!(conn.is_empty());
    assert_eq!(a.translate(bind("s1"), &mut conn, 10, false).err().map(|e| e.code), Some("26000".into()));
}
