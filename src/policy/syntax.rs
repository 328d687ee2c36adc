//! PostgreSQL's own answer to SQL text its parser rejects. The `pg_query` crate keeps only
//! the message of a parse error; libpg_query also has the cursor position, which clients
//! show and drivers test, so it is read here from the C API the crate links.

use std::ffi::{CStr, CString, c_char, c_int};

/// A parse error as PostgreSQL reports it: the message and the 1-based character position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// PostgreSQL's message (`syntax error at or near "…"`, `unterminated quoted string…`).
    pub message: String,
    /// 1-based character position in the text; `None` when the error has none.
    pub position: Option<u32>,
}

/// `PgQueryError` of pg_query.h.
#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

/// `PgQueryParseResult` of pg_query.h.
#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// The error PostgreSQL's parser reports for `text`; `None` when it parses (or holds a NUL,
/// which no protocol message can carry).
pub fn syntax_error(text: &str) -> Option<SyntaxError> {
    let input = CString::new(text).ok()?;
    // SAFETY: `input` is a NUL-terminated string that outlives the call; the result is
    // read only before it is freed, once, by libpg_query's own function.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let found = result.error.as_ref().map(|e| SyntaxError {
            message: if e.message.is_null() {
                String::new()
            } else {
                CStr::from_ptr(e.message).to_string_lossy().into_owned()
            },
            position: u32::try_from(e.cursorpos).ok().filter(|&p| p > 0),
        });
        pg_query_free_parse_result(result);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_postgresql_message_and_character_position() {
        let e = |t: &str| syntax_error(t).map(|e| (e.message, e.position));
        assert_eq!(e("SELECT FROM WHERE"), Some(("syntax error at or near \"WHERE\"".into(), Some(13))));
        assert_eq!(e("SELECT 'é', FROM x"), Some(("syntax error at or near \"FROM\"".into(), Some(13))));
        assert_eq!(e("SELECT 'abc"), Some(("unterminated quoted string at or near \"'abc\"".into(), Some(8))));
        assert_eq!(e("SELECT 1"), None);
    }
}
