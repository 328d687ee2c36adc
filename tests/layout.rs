//! The module graph of `src/` has no cycle: files import downwards only (docs/contributing.md,
//! "Layout"). And the documentation says what the code does: the configuration reference
//! (docs/configuration.md) against the configuration structs, the table of the proxy's errors
//! (docs/troubleshooting.md) against `src/protocol/proxy_error.rs`, and the layout
//! (docs/contributing.md) against the tree.
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

/// A documentation page, by its path from the repository root.
fn doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

/// The text of `page` from the heading line `heading` to the next heading of the same level.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap_or_default();
    let start = page.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("a section {heading:?}")) + 1;
    let rest = &page[start..];
    let end = rest[heading.len()..].find(&format!("\n{level} ")).map_or(rest.len(), |e| e + heading.len());
    &rest[..end]
}

/// The cells of a markdown table row, `\|` kept inside its cell.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().expect("a cell").push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().expect("a cell").push(c),
        }
    }
    if out.last().is_some_and(|c| c.trim().is_empty()) {
        out.pop();
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

const TROUBLESHOOTING: &str = "docs/troubleshooting.md";

/// The table of the proxy's own errors in docs/troubleshooting.md is the one in
/// `src/protocol/proxy_error.rs`. On a difference, paste the table printed between the markers.
#[test]
fn the_troubleshooting_page_lists_every_error_of_the_proxy_as_the_code_has_it() {
    let page = doc(TROUBLESHOOTING);
    let (begin, end) = ("<!-- errors:begin -->\n", "<!-- errors:end -->");
    let start = page.find(begin).expect("docs/troubleshooting.md has the errors markers") + begin.len();
    let stop = page[start..].find(end).expect("docs/troubleshooting.md has the end marker") + start;
    let expected = rlsproxy::protocol::ProxyError::markdown_table();
    assert!(
        page[start..stop] == expected,
        "docs/troubleshooting.md's error table differs; it should read:\n{expected}"
    );
}

/// Every SQLSTATE the proxy sends has a section of causes and fixes in docs/troubleshooting.md:
/// a heading "### `CODE`" (or "### The server's SQLSTATE" for the errors that pass the server's on).
#[test]
fn the_troubleshooting_page_explains_every_sqlstate_the_proxy_sends() {
    let page = doc(TROUBLESHOOTING);
    let fixes = section(&page, "## Causes and fixes, by SQLSTATE");
    let table = rlsproxy::protocol::ProxyError::markdown_table();
    let mut codes: BTreeSet<String> = table.lines().skip(2).filter_map(|row| cells(row).get(1).cloned()).collect();
    codes.extend(["`28P01`".to_string(), "`28000`".to_string()]); // token errors (src/auth/error.rs)
    let missing: Vec<&String> = codes
        .iter()
        .filter(|code| {
            let heading = if code.as_str() == "the server's" {
                "### The server's SQLSTATE".to_string()
            } else {
                format!("### {code}")
            };
            !fixes.lines().any(|l| l == heading)
        })
        .collect();
    assert!(missing.is_empty(), "docs/troubleshooting.md has no section of causes and fixes for {missing:?}");
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

/// Whether a reload applies `key` (dotted): not when it is, or is inside, a restart-only key.
fn reload_applies(key: &str) -> bool {
    !rlsproxy::reload::RESTART_KEYS
        .iter()
        .any(|r| key == *r || key.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
}

/// What one row of the reference says that the structs disagree with, if anything.
fn reference_row_problems(defaults: &serde_json::Value, key: &str, row: &[String]) -> Vec<String> {
    use serde_json::{Value, json};
    let pointer = format!("/{}", key.replace('.', "/"));
    let Some(default) = defaults.pointer(&pointer) else { return vec![format!("{key}: no such key")] };
    // Whether the configuration accepts `value` for this key, everything else at its default.
    let with = |value: Value| -> Option<rlsproxy::config::Config> {
        let mut all = defaults.clone();
        *all.pointer_mut(&pointer)? = value;
        serde_json::from_value(all).ok()
    };
    let accepts = |value: Value| with(value).is_some();
    let [_, ty, documented, reload, env, ..] = row else { return vec![format!("{key}: fewer than 6 cells")] };
    let mut problems = Vec::new();
    let type_ok = match ty.as_str() {
        "boolean" => default.is_boolean(),
        "integer" => default.is_u64() && !accepts(json!("1 KiB")),
        "size" => default.is_u64() && accepts(json!("1 KiB")),
        "string" => (default.is_string() || default.is_null()) && accepts(json!("any text")),
        "path" => default.is_null() && accepts(json!("some/file")),
        "address" => accepts(json!("127.0.0.1:1")) && !accepts(json!("any text")),
        "list of strings" => default.is_array() && accepts(json!(["any text"])),
        other => match other.strip_prefix("one of ") {
            Some(list) => {
                let values: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
                default.is_string()
                    && values.iter().any(|v| default.as_str() == Some(*v))
                    && values.iter().all(|v| accepts(json!(v)))
                    && !accepts(json!("any text"))
            }
            None => false,
        },
    };
    if !type_ok {
        problems.push(format!("{key}: the type is not {ty:?}"));
    }
    let value = match documented.as_str() {
        "unset" => Some(Value::Null),
        cell => cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .map(|text| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))),
    };
    if value.and_then(&with) != Some(rlsproxy::config::Config::default()) {
        problems.push(format!("{key}: the default is not {documented}"));
    }
    let expected_reload = if reload_applies(key) { "yes" } else { "no" };
    if reload != expected_reload {
        problems.push(format!("{key}: reload should say {expected_reload}"));
    }
    let variable = format!("`RLSPROXY__{}`", key.to_uppercase().replace('.', "__"));
    if *env != variable {
        problems.push(format!("{key}: the environment variable is {variable}"));
    }
    problems
}

/// docs/configuration.md's reference has one row per key of the configuration structs, and no
/// other, each with the key's type, default, whether a reload applies it (the restart-only keys
/// of `src/reload/restart.rs`) and its environment variable.
#[test]
fn the_configuration_reference_documents_every_key_as_the_structs_have_it() {
    let page = doc("docs/configuration.md");
    let reference = section(&page, "## Every key");
    let defaults = serde_json::to_value(rlsproxy::config::Config::default()).expect("serialize the defaults");
    let mut keys = BTreeSet::new();
    configuration_keys(&defaults, "", &mut keys);
    let mut documented = BTreeSet::new();
    let mut problems = Vec::new();
    for row in reference.lines().filter(|l| l.starts_with("| `")).map(cells) {
        let key = row[0].trim_matches('`').to_string();
        if !row[0].starts_with('`') || !row[0].ends_with('`') || key.contains('`') {
            problems.push(format!("{:?}: the first cell must be one key", row[0]));
            continue;
        }
        if !documented.insert(key.clone()) {
            problems.push(format!("{key}: documented twice"));
        }
        if keys.contains(&key) {
            problems.extend(reference_row_problems(&defaults, &key, &row));
        }
    }
    let missing: Vec<&String> = keys.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && problems.is_empty(),
        "docs/configuration.md lacks {missing:?}, documents keys that do not exist: {unknown:?}, \
         and disagrees with the configuration structs: {problems:#?}"
    );
}

/// The layout in docs/contributing.md names real paths (the first word of each unindented line
/// of its code block), and every file and folder of `src/`.
#[test]
fn the_layout_names_existing_paths_and_every_part_of_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = doc("docs/contributing.md");
    let layout = section(&page, "## Layout");
    let block = layout.split("```").nth(1).expect("the layout's code block");
    let named: BTreeSet<&str> =
        block.lines().filter(|l| !l.starts_with(' ')).filter_map(|l| l.split_whitespace().next()).collect();
    let absent: Vec<&&str> = named.iter().filter(|p| !root.join(p).exists()).collect();
    let mut unnamed = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        let shown = if path.is_dir() { format!("src/{name}/") } else { format!("src/{name}") };
        if !named.contains(shown.as_str()) {
            unnamed.push(shown);
        }
    }
    unnamed.sort();
    assert!(
        absent.is_empty() && unnamed.is_empty(),
        "docs/contributing.md's layout names paths that do not exist: {absent:?}, and leaves out {unnamed:?}"
    );
}

/// The GitHub anchors of a markdown page: each heading's text lower-cased, links reduced to
/// their text, punctuation but `-` and `_` dropped, spaces made `-`; repeats get `-1`, `-2`.
fn anchors(page: &str) -> BTreeSet<String> {
    let link = regex::Regex::new(r"\[([^\]]*)\]\([^)]*\)").expect("regex");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) else { continue };
        let text = link.replace_all(heading.trim_start_matches('#').trim(), "$1").to_lowercase();
        let slug: String = text
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("read docs") {
        pages.push(entry.expect("entry").path());
    }
    pages.retain(|p| p.extension().is_some_and(|e| e == "md"));
    let code = regex::Regex::new(r"(?s)```.*?```|`[^`\n]*`").expect("regex");
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    let (mut checked, mut broken) = (0, Vec::new());
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("read a page");
        let prose = code.replace_all(&text, "");
        for target in link.captures_iter(&prose).map(|c| c[1].to_string()) {
            if target.contains(':') {
                continue; // https:, mailto:
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() { page.clone() } else { page.parent().expect("a folder").join(path) };
            let from = page.strip_prefix(root).expect("in the repository").display();
            if !file.exists() {
                broken.push(format!("{from}: {target}: no such file"));
            } else if !anchor.is_empty()
                && !anchors(&std::fs::read_to_string(&file).unwrap_or_default()).contains(anchor)
            {
                broken.push(format!("{from}: {target}: no such heading"));
            }
        }
    }
    assert!(checked > 100, "only {checked} links found: is the pattern right?");
    assert_eq!(broken, Vec::<String>::new(), "broken links in the docs");
}
