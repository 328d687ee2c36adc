//! `[jwt] tenant_format`: which spellings of a tenant are accepted at login. Policies cast the
//! setting (`::integer`, `::uuid`), and PostgreSQL reads `" 2"`, `"02"` and `"+2"` as 2, or
//! an upper-case UUID as the lower-case one: a user who can shape the tenant string of their
//! token (a sign-up form, a profile field) must not reach another tenant's rows through a
//! second spelling of its id. Only the canonical spelling passes.

use regex::Regex;

/// The accepted tenant spellings.
#[derive(Debug, Clone)]
pub enum TenantFormat {
    /// Any non-empty text without NUL.
    Text,
    /// Decimal digits, no sign, no leading zero, within bigint.
    Integer,
    /// Lower-case hyphenated UUID.
    Uuid,
    /// A regular expression the whole value matches.
    Pattern(Regex),
}

impl TenantFormat {
    /// `text`, `integer`, `uuid`, or a regular expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "text" => Self::Text,
            "integer" => Self::Integer,
            "uuid" => Self::Uuid,
            pattern => Self::Pattern(Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?),
        })
    }

    /// Whether `tenant` is in this format.
    pub fn accepts(&self, tenant: &str) -> bool {
        match self {
            Self::Text => true,
            Self::Integer => {
                tenant.bytes().all(|b| b.is_ascii_digit())
                    && (tenant == "0" || !tenant.starts_with('0'))
                    && tenant.parse::<i64>().is_ok()
            }
            Self::Uuid => {
                tenant.len() == 36
                    && tenant.char_indices().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => c == '-',
                        _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
                    })
            }
            Self::Pattern(re) => re.is_match(tenant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TenantFormat;

    #[test]
    fn only_the_canonical_spelling_passes() {
        let integer = TenantFormat::parse("integer").unwrap();
        for ok in ["0", "2", "2147483648"] {
            assert!(integer.accepts(ok), "{ok}");
        }
        for bad in [" 2", "02", "+2", "-2", "2 ", "2.0", "", "99999999999999999999", "٢"] {
            assert!(!integer.accepts(bad), "{bad:?}");
        }
        let uuid = TenantFormat::parse("uuid").unwrap();
        assert!(uuid.accepts("4f1c2a9e-0d5b-4e61-9b2f-7c3e8a1d6b05"));
        for bad in [
            "4F1C2A9E-0D5B-4E61-9B2F-7C3E8A1D6B05",
            "{4f1c2a9e-0d5b-4e61-9b2f-7c3e8a1d6b05}",
            "4f1c2a9e0d5b4e619b2f7c3e8a1d6b05",
        ] {
            assert!(!uuid.accepts(bad), "{bad}");
        }
        let slug = TenantFormat::parse("[a-z][a-z0-9-]{1,30}").unwrap();
        assert!(slug.accepts("acme-1"));
        assert!(!slug.accepts("acme-1\n") && !slug.accepts("Acme") && !slug.accepts("x acme-1"));
        assert!(TenantFormat::parse("(").is_err());
        assert!(TenantFormat::parse("text").unwrap().accepts(" anything "));
    }
}
