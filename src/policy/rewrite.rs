//! What the per-tenant rewrites of client SQL (`notify`, `advisory`) share: the tenant's
//! hash, the text as the parser needs it, its tokens, and splicing edits into the original
//! bytes, so that everything but the edited places is kept byte for byte.

use std::borrow::Cow;
use std::ops::Range;

use pg_query::protobuf::{ScanToken, Token};

/// Why edits cannot be spliced into a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    /// Two edits overlap.
    #[error("overlapping edits")]
    Overlap,
    /// A replaced range of a text that is not UTF-8 is not ASCII.
    #[error("a replaced name is not ASCII in text that is not UTF-8")]
    NotAscii,
}

/// Lower-case hex SHA-256 of the tenant claim (UTF-8): 64 digits, the same for every rewrite.
pub fn tenant_hash_hex(tenant: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tenant.as_bytes());
    let mut hex = String::with_capacity(64);
    for &b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// `sql` as the parser needs it (UTF-8, same byte offsets): text in a single-byte or EUC
/// client encoding has each byte from 0x80 up replaced by `x`, which keeps every token where
/// it is (such bytes are identifier characters or inside quotes for the server too).
pub fn parsable(sql: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(sql) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(sql.iter().map(|&b| if b.is_ascii() { char::from(b) } else { 'x' }).collect()),
    }
}

/// The tokens of `text` without its comments; `Err`: the scanner's message.
pub fn tokens(text: &str) -> Result<Vec<ScanToken>, String> {
    Ok(pg_query::scan_tokens(text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| t.token != Token::SqlComment as i32 && t.token != Token::CComment as i32)
        .collect())
}

/// `sql` with each range replaced (an empty range: an insertion); with `ascii_only` (text
/// that is not UTF-8, parsed with stand-ins for its other bytes) a replaced range must be
/// ASCII, so that what the parser read is what the client wrote.
pub fn splice(sql: &[u8], mut edits: Vec<(Range<usize>, String)>, ascii_only: bool) -> Result<Vec<u8>, SpliceError> {
    edits.sort_by_key(|(range, _)| range.start);
    let added: usize = edits.iter().map(|(_, r)| r.len()).sum();
    let mut out = Vec::with_capacity(sql.len() + added);
    let mut at = 0;
    for (range, replacement) in edits {
        let Some(replaced) = sql.get(range.clone()).filter(|_| range.start >= at) else {
            return Err(SpliceError::Overlap);
        };
        if ascii_only && !replaced.is_ascii() {
            return Err(SpliceError::NotAscii);
        }
        out.extend_from_slice(&sql[at..range.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&sql[at..]);
    Ok(out)
}

/// Whether `token` is one of `kinds`.
pub fn is(token: &ScanToken, kinds: &[Token]) -> bool {
    kinds.iter().any(|k| *k as i32 == token.token)
}

/// The byte range of `token`.
pub fn span(token: &ScanToken) -> Option<Range<usize>> {
    Some(usize::try_from(token.start).ok()?..usize::try_from(token.end).ok()?)
}
