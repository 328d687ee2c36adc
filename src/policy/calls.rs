//! The function calls that the per-tenant rewrites (`notify`, `advisory`) scope, found by
//! walking the parse tree (`walk`): every node kind is visited, and no copy of the tree is
//! built (a JSON copy of a long text's tree took several times the memory of the parse).

use pg_query::protobuf::ParseResult;

use super::walk::{Visit, walk};

/// A call of a wanted function, as written.
#[derive(Debug, Default)]
pub struct Call {
    /// Its name parts (`[schema,] name`, or more).
    pub names: Vec<String>,
    /// How many arguments it has.
    pub args: usize,
    /// Whether an argument is named (`name => value`).
    pub named_args: bool,
    /// Whether it has aggregate or window clauses: `*`, DISTINCT, VARIADIC, WITHIN GROUP,
    /// OVER, FILTER or ORDER BY.
    pub decorated: bool,
    /// Where it starts in the text.
    pub location: Option<usize>,
    /// Its first argument's value when that is a string constant.
    pub first_string: Option<String>,
    /// Where its first argument starts when that is a constant.
    pub first_constant_at: Option<usize>,
}

/// What a parse tree holds of the functions a rewrite scopes.
#[derive(Debug, Default)]
pub struct Found {
    /// The calls whose (last) name part is wanted.
    pub calls: Vec<Call>,
    /// Strings anywhere (names and constants) that spell a wanted name.
    pub names: usize,
    /// Nodes of the kinds asked for, at any depth.
    pub kinds: usize,
}

/// The calls of functions whose name `wanted` accepts, and the nodes of `kinds`, in `tree`.
pub fn find(tree: &ParseResult, wanted: fn(&str) -> bool, kinds: &[&str]) -> Found {
    let mut finder = Finder { wanted, kinds, frames: Vec::new(), found: Found::default() };
    // The walk cannot fail (its error type has no value to return).
    let _ = walk(tree, &mut finder);
    finder.found
}

/// Clauses that make a call an aggregate's or a window function's when present.
const CLAUSES: [&str; 3] = ["over", "agg_filter", "agg_order"];
/// Flags that do the same when set.
const FLAGS: [&str; 4] = ["agg_star", "agg_distinct", "func_variadic", "agg_within_group"];

/// A call being walked: where its node starts in the path, and what was seen of it so far.
struct Frame {
    depth: usize,
    call: Call,
}

struct Finder<'k> {
    wanted: fn(&str) -> bool,
    kinds: &'k [&'k str],
    /// The calls around the current node, innermost last.
    frames: Vec<Frame>,
    found: Found,
}

impl Finder<'_> {
    /// The innermost call around `path`, and the path below its node.
    fn innermost<'p>(&mut self, path: &'p [&'static str]) -> Option<(&mut Call, &'p [&'static str])> {
        let frame = self.frames.last_mut()?;
        Some((&mut frame.call, path.get(frame.depth..)?))
    }
}

impl Visit for Finder<'_> {
    fn enter(&mut self, path: &[&'static str]) {
        let kind = path.last().copied().unwrap_or_default();
        if self.kinds.contains(&kind) {
            self.found.kinds += 1;
        }
        if kind == "FuncCall" {
            self.frames.push(Frame { depth: path.len(), call: Call::default() });
            return;
        }
        let Some((call, below)) = self.innermost(path) else { return };
        match below {
            ["args", "node"] => call.args += 1,
            ["args", "node", "NamedArgExpr"] => call.named_args = true,
            // Entered with anything inside: the clause is there.
            [clause, _, ..] if CLAUSES.contains(clause) => call.decorated = true,
            _ => {}
        }
    }

    fn leave(&mut self, path: &[&'static str]) {
        if path.last() != Some(&"FuncCall") || self.frames.last().is_none_or(|f| f.depth != path.len()) {
            return;
        }
        if let Some(Frame { call, .. }) = self.frames.pop()
            && call.names.last().is_some_and(|name| (self.wanted)(name))
        {
            self.found.calls.push(call);
        }
    }

    fn text(&mut self, path: &[&'static str], value: &str) {
        if path.last() == Some(&"sval") && (self.wanted)(value) {
            self.found.names += 1;
        }
        let Some((call, below)) = self.innermost(path) else { return };
        match below {
            ["funcname", "node", "String", "sval"] => call.names.push(value.to_owned()),
            ["args", "node", "AConst", "val", "Sval", "sval"] if call.args == 1 => {
                call.first_string = Some(value.to_owned());
            }
            _ => {}
        }
    }

    fn int(&mut self, path: &[&'static str], value: i64) {
        let Some((call, below)) = self.innermost(path) else { return };
        let at = usize::try_from(value).ok();
        match below {
            ["location"] => call.location = at,
            ["args", "node", "AConst", "location"] if call.args == 1 => call.first_constant_at = at,
            _ => {}
        }
    }

    fn flag(&mut self, path: &[&'static str], value: bool) {
        if let Some((call, [flag])) = self.innermost(path)
            && value
            && FLAGS.contains(flag)
        {
            call.decorated = true;
        }
    }

    fn statement(&mut self, _: bool) {}
}
