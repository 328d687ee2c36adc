//! Claim checks after the signature is verified: time (`exp`, `nbf` with leeway), `iss`, `aud`,
//! then the tenant and role claims that become the [`TenantContext`].
//!
//! Done here rather than by jsonwebtoken's `Validation` so that every failure has its own
//! message, and so that the clock is a parameter (tests pin it).

use serde_json::{Map, Value};

use super::error::shown;
use super::path::ClaimPath;
use super::tenant_format::TenantFormat;
use super::{AuthError, TenantContext};
use crate::config::{ConfigError, JwtConfig};

/// The claim rules of one configuration.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_s: u64,
    pub require_exp: bool,
    /// As configured, for messages.
    pub tenant_claim: String,
    pub role_claim: String,
    tenant_path: ClaimPath,
    tenant_format: TenantFormat,
    /// As configured, for messages.
    tenant_format_text: String,
    /// `None` when `role_claim` is empty.
    role_path: Option<ClaimPath>,
    pub allowed_roles: Vec<String>,
}

impl Rules {
    /// The rules `cfg` asks for; a claim path that does not parse is the configuration's error.
    pub(crate) fn new(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        let path = |key, text: &str| ClaimPath::parse(text).map_err(|reason| ConfigError::Invalid { key, reason });
        Ok(Self {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_s: cfg.leeway_s,
            require_exp: cfg.require_exp,
            tenant_path: path("jwt.tenant_claim", &cfg.tenant_claim)?,
            tenant_format: TenantFormat::parse(&cfg.tenant_format)
                .map_err(|reason| ConfigError::Invalid { key: "jwt.tenant_format", reason })?,
            tenant_format_text: cfg.tenant_format.clone(),
            role_path: (!cfg.role_claim.is_empty()).then(|| path("jwt.role_claim", &cfg.role_claim)).transpose()?,
            tenant_claim: cfg.tenant_claim.clone(),
            role_claim: cfg.role_claim.clone(),
            allowed_roles: cfg.allowed_roles.clone(),
        })
    }

    /// Checks verified claims at `now` (unix seconds) and extracts the context.
    pub(crate) fn check(&self, claims: Map<String, Value>, now: u64) -> Result<TenantContext, AuthError> {
        let expires_at = numeric_date(&claims, "exp")?;
        match expires_at {
            None if self.require_exp => return Err(AuthError::MissingClaim("exp")),
            Some(exp) if expired(exp, now, self.leeway_s) => return Err(AuthError::Expired),
            _ => {}
        }
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && now.saturating_add(self.leeway_s) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
                Some(_) => {
                    return Err(AuthError::ClaimType { claim: "iss", expected: "a string" });
                }
            }
        }
        if let Some(audience) = &self.audience {
            check_audience(claims.get("aud"), audience)?;
        }
        let claims = Value::Object(claims);
        let tenant = match self.tenant_path.lookup(&claims) {
            None => return Err(AuthError::TenantClaimMissing(self.tenant_claim.clone())),
            Some(Value::String(s)) if !s.is_empty() && !s.contains('\0') => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(AuthError::TenantClaimType(self.tenant_claim.clone())),
        };
        if !self.tenant_format.accepts(&tenant) {
            return Err(AuthError::TenantFormat(self.tenant_claim.clone(), self.tenant_format_text.clone()));
        }
        let role = match self.role_path.as_ref().and_then(|path| path.lookup(&claims)) {
            None => None,
            Some(Value::String(r)) if self.allowed_roles.contains(r) => Some(r.clone()),
            Some(Value::String(r)) => return Err(AuthError::RoleNotAllowed(shown(r))),
            // An array (Keycloak's realm_access.roles): its first role that a token may select;
            // none of them, no role (providers add default roles to every user).
            Some(Value::Array(roles)) => {
                let mut chosen = None;
                for role in roles {
                    let role = role.as_str().ok_or_else(|| AuthError::RoleClaimType(self.role_claim.clone()))?;
                    if chosen.is_none() && self.allowed_roles.iter().any(|a| a == role) {
                        chosen = Some(role.to_string());
                    }
                }
                chosen
            }
            Some(_) => return Err(AuthError::RoleClaimType(self.role_claim.clone())),
        };
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_string);
        Ok(TenantContext { tenant, role, claims, expires_at, subject })
    }
}

/// RFC 7519: the token is valid only while `now` is before `exp`; leeway extends that.
pub(crate) fn expired(exp: u64, now: u64, leeway_s: u64) -> bool {
    now >= exp.saturating_add(leeway_s)
}

/// A NumericDate claim: a non-negative number of seconds (fractions are truncated).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    let bad = AuthError::ClaimType { claim: name, expected: "a non-negative number" };
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
            _ => Err(bad),
        },
        Some(_) => Err(bad),
    }
}

/// `aud` may be one string or an array of strings; one of them must be `audience`.
fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), AuthError> {
    let bad = AuthError::ClaimType { claim: "aud", expected: "a string or an array of strings" };
    match aud {
        None => Err(AuthError::MissingClaim("aud")),
        Some(Value::String(a)) if a == audience => Ok(()),
        Some(Value::String(_)) => Err(AuthError::WrongAudience),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(a) => found |= a == audience,
                    _ => return Err(bad),
                }
            }
            if found { Ok(()) } else { Err(AuthError::WrongAudience) }
        }
        Some(_) => Err(bad),
    }
}
