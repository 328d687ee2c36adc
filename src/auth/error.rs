//! Why a token was refused, in words a client may see.

/// SQLSTATE `invalid_password`: the token itself is bad (shape, algorithm, key, signature, time,
/// issuer, audience).
pub const SQLSTATE_INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `invalid_authorization_specification`: the token is genuine but does not authorise a
/// session here (no usable tenant, role not allowed).
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";

/// A token verification failure.
///
/// One variant per distinct failure so that callers and tests can match on it; `Display` is the
/// message sent to the client. No message ever contains the token: values taken from it (an
/// algorithm, a `kid`, a role) are shortened and escaped first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token exceeds [`super::MAX_TOKEN_LEN`]; refused before any parsing.
    #[error("token is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The token is not three base64url parts with a JSON header and a JSON object payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not in `jwt.algorithms` (this includes `none`).
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No `kid` in the header, and the key set has several keys to choose from.
    #[error("token has no kid but the key set has several keys")]
    MissingKid,
    /// The header's `kid` names no key of the key set.
    #[error("no key with kid {0}")]
    UnknownKid(String),
    /// The key selected by `kid` cannot verify the header's algorithm.
    #[error("key {kid} cannot verify algorithm {alg}")]
    KeyMismatch {
        /// The key id (shown).
        kid: String,
        /// The algorithm from the header.
        alg: String,
    },
    /// No configured key can verify this algorithm.
    #[error("no key is configured for algorithm {0}")]
    NoKey(String),
    /// The signature does not verify with the selected key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` (plus leeway) is in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// A claim the configuration requires is absent (`exp`, `iss` or `aud`).
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A registered claim has the wrong JSON type.
    #[error("claim {claim} must be {expected}")]
    ClaimType {
        /// The claim name.
        claim: &'static str,
        /// What it must be, e.g. "a number".
        expected: &'static str,
    },
    /// `iss` differs from `jwt.issuer`.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not contain `jwt.audience`.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The tenant claim (`jwt.tenant_claim`, a dotted path) is absent.
    #[error("token has no tenant claim {0}")]
    TenantClaimMissing(String),
    /// The tenant claim is not a non-empty string (without NUL) or an integer.
    #[error("tenant claim {0} must be a string or an integer")]
    TenantClaimType(String),
    /// The tenant is not in the format `jwt.tenant_format` asks for (claim path, format).
    #[error("tenant claim {0} is not in the format jwt.tenant_format = {1}")]
    TenantFormat(String, String),
    /// The role claim (`jwt.role_claim`) is present but not a string or an array of strings.
    #[error("role claim {0} must be a string or an array of strings")]
    RoleClaimType(String),
    /// The role claim names a role outside `jwt.allowed_roles`.
    #[error("role {0} is not allowed")]
    RoleNotAllowed(String),
}

impl AuthError {
    /// The SQLSTATE of the ErrorResponse: 28P01 when the token is bad (malformed, wrong algorithm
    /// or key, bad signature, expired, not yet valid, wrong issuer or audience, missing or
    /// mistyped registered claim); 28000 when a genuine token does not authorise a session
    /// (tenant claim missing or mistyped, role claim mistyped or not allowed).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::TenantClaimMissing(_)
            | AuthError::TenantClaimType(_)
            | AuthError::TenantFormat(..)
            | AuthError::RoleClaimType(_)
            | AuthError::RoleNotAllowed(_) => SQLSTATE_INVALID_AUTHORIZATION,
            _ => SQLSTATE_INVALID_PASSWORD,
        }
    }

    /// A short, fixed name for the `reason` label of `rlsproxy_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TooLong { .. } => "too_long",
            AuthError::Malformed(_) => "malformed",
            AuthError::AlgorithmNotAllowed(_) => "algorithm",
            AuthError::MissingKid | AuthError::UnknownKid(_) | AuthError::KeyMismatch { .. } | AuthError::NoKey(_) => {
                "key"
            }
            AuthError::BadSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::MissingClaim(_) | AuthError::ClaimType { .. } => "claims",
            AuthError::WrongIssuer => "issuer",
            AuthError::WrongAudience => "audience",
            AuthError::TenantClaimMissing(_) | AuthError::TenantClaimType(_) | AuthError::TenantFormat(..) => {
                "tenant_claim"
            }
            AuthError::RoleClaimType(_) | AuthError::RoleNotAllowed(_) => "role",
        }
    }
}

/// Longest piece of token-supplied text put in a message.
const SHOWN_MAX: usize = 64;

/// Renders a value taken from a token for a message or a log line: at most 64 characters,
/// control and non-ASCII characters escaped, so that a hostile header cannot flood or forge logs.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_MAX {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    if out.is_empty() { "\"\"".to_string() } else { out }
}
