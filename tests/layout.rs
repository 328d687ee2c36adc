//! The module graph of `src/` has no cycle: files import downwards only (README "Layout").
//! An edge is a path in code (not in comments) that names another file's module:
//! `crate::a::b…`, `super::…`, `self::…` or a child module declared in the file; each path
//! goes to the deepest module it names. A module may use what its ancestors define (a
//! `mod.rs` is its folder's table of contents): those edges are left out.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines (`src/a/b.rs` and `src/a/b/mod.rs`: `a::b`); `None` for the
/// binary's root, which nothing imports.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.last().map(String::as_str) {
        Some("main") => return None,
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// Identifier segments of a path starting at `text`, with `{a, b}` groups expanded one level.
fn paths_at(text: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut prefix = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            return inner
                .split(',')
                .map(|item| {
                    let mut p = prefix.clone();
                    p.extend(item.trim().split("::").map(ident).filter(|s| !s.is_empty()));
                    p
                })
                .collect();
        }
        let seg = ident(rest);
        if seg.is_empty() {
            return vec![prefix];
        }
        rest = &rest[seg.len()..];
        prefix.push(seg);
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => return vec![prefix],
        }
    }
}

/// The modules that the code of module `me` names, given every module there is.
fn imports(code: &str, me: &Module, modules: &BTreeSet<Module>) -> BTreeSet<Module> {
    let children: Vec<String> = code
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pub ").unwrap_or(l).strip_prefix("mod "))
        .map(|l| l.trim_end_matches(';').trim().to_owned())
        .collect();
    let mut found = BTreeSet::new();
    for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        let bytes = line.as_bytes();
        for (at, _) in line.char_indices() {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let tail = &line[at..];
            let (start, rest) = if let Some(rest) = tail.strip_prefix("crate::") {
                (Vec::new(), rest)
            } else if let Some(rest) = tail.strip_prefix("self::") {
                (me.clone(), rest)
            } else if tail.starts_with("super::") {
                let (mut start, mut rest) = (me.clone(), tail);
                while let Some(more) = rest.strip_prefix("super::") {
                    start.pop();
                    rest = more;
                }
                (start, rest)
            } else if children.iter().any(|c| tail.starts_with(&format!("{c}::"))) {
                (me.clone(), tail)
            } else {
                continue;
            };
            for path in paths_at(rest) {
                let mut full = start.clone();
                full.extend(path);
                while !full.is_empty() && !modules.contains(&full) {
                    full.pop();
                }
                if !full.is_empty() && !me.starts_with(&full) {
                    found.insert(full);
                }
            }
        }
    }
    found
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let parsed: Vec<(Module, String)> =
        all.iter().filter_map(|f| Some((module_of(&src, f)?, std::fs::read_to_string(f).expect("read")))).collect();
    let modules: BTreeSet<Module> = parsed.iter().map(|(m, _)| m.clone()).collect();
    let graph: BTreeMap<Module, BTreeSet<Module>> =
        parsed.iter().map(|(m, code)| (m.clone(), imports(code, m, &modules))).collect();
    assert!(graph.get(&vec!["session".to_string()]).is_some_and(|e| e.contains(&vec!["shared".to_string()])));
    // Depth-first; a module met again while on the stack closes a cycle.
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some(stack[at..].to_vec());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            // The crate root declares every module: an edge to it is not an import.
            if next.is_empty() {
                continue;
            }
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let cycle = visit(m, &graph, &mut Vec::new(), &mut done);
        let names: Option<Vec<String>> = cycle.map(|c| c.iter().map(|m| m.join("::")).collect());
        assert_eq!(names, None, "an import cycle in src/");
    }
}

/// README's table of the proxy's own errors is the one in `src/protocol/proxy_error.rs`.
#[test]
fn the_readme_lists_every_error_of_the_proxy_as_the_code_has_it() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let (begin, end) = ("<!-- errors:begin -->\n", "<!-- errors:end -->");
    let start = readme.find(begin).expect("README has the errors markers") + begin.len();
    let stop = readme[start..].find(end).expect("README has the end marker") + start;
    let expected = rlsproxy::protocol::ProxyError::markdown_table();
    assert!(readme[start..stop] == expected, "README's error table differs; it should read:\n{expected}");
}

/// The dotted keys README's configuration table documents: the first cell of each row, where
/// `` `a.b` / `c` `` stands for `a.b` and `a.c`, and `` `a.b`, `a.c` `` for both.
fn documented_keys(readme: &str) -> BTreeSet<String> {
    let start = readme.find("\n## Configuration").expect("README has a Configuration section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").expect("a section after it")];
    let mut keys = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let mut prefix = String::new();
        for piece in row.split('|').nth(1).unwrap_or_default().split(['/', ',']) {
            let Some(key) = piece.split('`').nth(1) else { continue };
            match key.rsplit_once('.') {
                Some((section, _)) => {
                    prefix = section.to_string();
                    keys.insert(key.to_string());
                }
                None if !prefix.is_empty() => {
                    keys.insert(format!("{prefix}.{key}"));
                }
                None => {}
            }
        }
    }
    keys
}

/// Every key of the configuration structs, dotted, from the defaults' serialization.
fn configuration_keys(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(map) if !prefix.contains('.') => {
            for (name, inner) in map {
                let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                configuration_keys(inner, &key, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// README's configuration table documents every key the configuration has, and no other.
#[test]
fn the_readme_documents_every_configuration_key() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let defaults = serde_json::to_value(rlsproxy::config::Config::default()).expect("serialize the defaults");
    let mut keys = BTreeSet::new();
    configuration_keys(&defaults, "", &mut keys);
    let documented = documented_keys(&readme);
    let missing: Vec<&String> = keys.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README's configuration table lacks {missing:?} and documents keys that do not exist: {unknown:?}"
    );
}
