//! The one way a log filter is read (`[log] filter` at start and reload, `RUST_LOG`).
//!
//! tracing-subscriber's own parser is not safe on arbitrary text, as fuzzing the configuration
//! loader showed, so each comma-separated directive is trimmed and checked alone before the
//! filter is built:
//! - span field values match as literal text, not as regular expressions, which it compiles
//!   into a full DFA up front (a few hundred bytes of nested patterns took over 15 seconds);
//! - a directive with white space before a multi-byte character (`"info, é=debug"`) made it
//!   slice a string off a character boundary, a panic;
//! - two directives for the same span field value (`"[{a=x}]=info,[{a=x}]=debug"`) broke the
//!   invariant its ordering asserts, a panic in a debug build. Two directives for one selector
//!   are refused: the second silently replaced the first, which is never what was meant.

use std::collections::HashMap;

use tracing_subscriber::EnvFilter;

/// Parses `text` into a filter, or says which directive is wrong.
pub fn parse_log_filter(text: &str) -> Result<EnvFilter, String> {
    let builder = || EnvFilter::builder().with_regex(false);
    let directives: Vec<&str> = text.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err("empty; \"off\" logs nothing".into());
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for directive in &directives {
        let alone = builder().parse(directive).map_err(|e| format!("`{directive}`: {e}"))?;
        // Displayed, a directive is its selector, then `=` and a level (which has no `=`).
        let shown = alone.to_string();
        let selector = shown.rsplit_once('=').map_or("", |(selector, _level)| selector).to_owned();
        if let Some(first) = seen.insert(selector, directive) {
            return Err(format!("`{first}` and `{directive}` set the same target twice; keep one"));
        }
    }
    builder().parse(directives.join(",")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_log_filter;

    #[test]
    fn accepts_the_usual_filters() {
        for ok in ["info", "off", "warn,rlsproxy=debug", " info , rlsproxy::session=trace ", "[conn{tenant=1}]=debug"] {
            assert!(parse_log_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_a_selector_given_twice() {
        let err = parse_log_filter("[{a=x}]=info,[{a=x}]=debug").err();
        assert_eq!(err.as_deref(), Some("`[{a=x}]=info` and `[{a=x}]=debug` set the same target twice; keep one"));
        let err = parse_log_filter("info,rlsproxy=debug,warn").err();
        assert_eq!(err.as_deref(), Some("`info` and `warn` set the same target twice; keep one"));
    }

    #[test]
    fn white_space_before_a_multi_byte_target_is_not_a_panic() {
        let filter = parse_log_filter("info, é=debug").map(|f| f.to_string());
        assert_eq!(filter.as_deref(), Ok("é=debug,info"));
    }

    #[test]
    fn an_empty_filter_is_refused_not_silent() {
        assert_eq!(parse_log_filter(" , ").err().as_deref(), Some("empty; \"off\" logs nothing"));
    }

    #[test]
    fn names_the_wrong_directive() {
        let err = parse_log_filter("info,rlsproxy=loud").err().unwrap_or_default();
        assert!(err.starts_with("`rlsproxy=loud`: "), "{err}");
    }
}
