//! Text heuristics over what the catalog stores as text: deparsed policy expressions,
//! function bodies (`prosrc`), reloptions. The catalog records which functions a policy
//! calls and which tables a view reads, but not what a PL/pgSQL body does: for that the
//! doctor reads the source, case-insensitively, and says so in its findings. Comments and
//! string literals are not told apart from code, so a body that only *mentions* a table in a
//! comment is reported too (a false positive is cheaper here than a missed leak); dynamic SQL
//! (`EXECUTE 'SELECT … FROM ' || t`) is not seen.

/// Whether `text` contains `word` as a whole identifier (case-insensitive): not preceded or
/// followed by a letter, digit, `_` or `$`. `public.documents` and `"documents"` mention
/// `documents`; `documents_archive` does not.
pub(super) fn mentions_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    let word = word.to_lowercase();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    text.match_indices(&word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// What shows that an expression or a function body reads the tenant context: the tenant
/// and claims settings as string literals (`current_setting('app.current_tenant')`), and
/// strict mode's signed setting and verifying functions (migrations/0003).
#[derive(Debug, Clone, Default)]
pub(super) struct Markers(Vec<String>);

impl Markers {
    /// Markers for `tenant_setting` and, when not empty, `claims_setting`, and strict mode's.
    /// With `strict` only strict mode's: a policy that trusts the unsigned setting is the
    /// gap strict mode exists to close (any path past the guard could set it).
    pub(super) fn new(tenant_setting: &str, claims_setting: &str, strict: bool) -> Self {
        let mut markers = Vec::new();
        if !strict {
            markers.push(format!("'{}'", tenant_setting.to_lowercase()));
            if !claims_setting.is_empty() {
                markers.push(format!("'{}'", claims_setting.to_lowercase()));
            }
        }
        markers.push("'rlsproxy.signed_context'".into());
        for function in
            ["rlsproxy.tenant_id(", "rlsproxy.tenant(", "rlsproxy.tenant_uuid(", "rlsproxy.verified_context("]
        {
            markers.push(function.into());
        }
        Self(markers)
    }

    /// Whether `text` contains one of the markers.
    pub(super) fn found_in(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        self.0.iter().any(|m| text.contains(m.as_str()))
    }
}

/// Whether a function body sets `setting` with a `SET [LOCAL|SESSION] setting` statement
/// (PL/pgSQL runs it as SQL). Calls of `set_config` are found by [`mentions_word`].
pub(super) fn sets_setting(body: &str, setting: &str) -> bool {
    let body = body.to_lowercase();
    let setting = setting.to_lowercase();
    let tokens: Vec<&str> = body
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '$')))
        .filter(|t| !t.is_empty())
        .collect();
    tokens.iter().enumerate().any(|(i, t)| {
        *t == "set"
            && match tokens.get(i + 1) {
                Some(&"local" | &"session") => tokens.get(i + 2) == Some(&setting.as_str()),
                next => next == Some(&setting.as_str()),
            }
    })
}

/// Whether a `name=value` list (reloptions, proconfig) sets `name` (case-insensitive).
pub(super) fn option_value<'a>(options: &'a [String], name: &str) -> Option<&'a str> {
    options.iter().find_map(|o| o.split_once('=').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A boolean option as PostgreSQL's `parse_bool` reads it: `true`, `yes`, `on`, `1` and
/// their unambiguous prefixes (`t`, `y`, `of` for off…), any case.
pub(super) fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "on" || v == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_whole_identifiers() {
        assert!(mentions_word("SELECT count(*) FROM public.Documents d", "documents"));
        assert!(mentions_word("select * from \"documents\"", "documents"));
        assert!(!mentions_word("select * from documents_archive", "documents"));
        assert!(!mentions_word("select * from my_documents", "documents"));
        assert!(mentions_word("PERFORM set_config('x', t, false);", "set_config"));
        assert!(!mentions_word("PERFORM my_set_config()", "set_config"));
        assert!(!mentions_word("anything", ""));
    }

    #[test]
    fn markers_find_the_setting_and_strict_functions() {
        let m = Markers::new("app.current_tenant", "request.jwt.claims", false);
        assert!(m.found_in("(tenant_id = (current_setting('app.current_tenant'::text))::integer)"));
        assert!(m.found_in("(tenant_id = (current_setting('APP.Current_Tenant', true))::integer)"));
        assert!(m.found_in("((current_setting('request.jwt.claims', true))::json ->> 'tid') = tenant"));
        assert!(m.found_in("(tenant_id = ( SELECT rlsproxy.tenant_id() AS tenant_id))"));
        assert!(!m.found_in("(tenant_id > 0)"));
        assert!(!m.found_in("current_setting('app.current_tenant_name')"));
        assert!(!Markers::new("app.current_tenant", "", false).found_in("current_setting('request.jwt.claims')"));
        let strict = Markers::new("app.current_tenant", "", true);
        assert!(!strict.found_in("(tenant_id = (current_setting('app.current_tenant'::text))::integer)"));
        assert!(strict.found_in("(tenant_id = ( SELECT rlsproxy.tenant_id() AS tenant_id))"));
    }

    #[test]
    fn set_statements_of_the_setting() {
        assert!(sets_setting("BEGIN SET LOCAL app.current_tenant = t; END", "app.current_tenant"));
        assert!(sets_setting("set app.current_tenant to '2'", "app.current_tenant"));
        assert!(sets_setting("SET SESSION App.Current_Tenant='2'", "app.current_tenant"));
        assert!(!sets_setting("SET search_path = public", "app.current_tenant"));
        assert!(!sets_setting("RESET app.current_tenant", "app.current_tenant"));
    }

    #[test]
    fn options_and_booleans() {
        let opts = vec!["check_option=local".to_string(), "Security_Invoker=on".to_string()];
        assert_eq!(option_value(&opts, "security_invoker"), Some("on"));
        assert_eq!(option_value(&opts, "security_barrier"), None);
        for yes in ["true", "t", "TRU", "yes", "y", "on", "1"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["false", "f", "no", "n", "off", "of", "0"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for neither in ["o", "", "2", "truth"] {
            assert_eq!(parse_bool(neither), None, "{neither}");
        }
    }
}
