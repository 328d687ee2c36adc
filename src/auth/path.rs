//! Claim paths (`[jwt] tenant_claim`, `role_claim`): names separated by dots, through nested
//! objects (`app_metadata.tenant_id`), a name with dots or slashes in double quotes, as
//! identity providers namespace their custom claims (Auth0:
//! `"https://example.com/tenant_id"`; `realm_access.roles`). PostgREST's role-claim key reads
//! the same way.

use serde_json::{Map, Value};

/// A parsed claim path: the names, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses `path`; the error says what is wrong with it.
    pub fn parse(path: &str) -> Result<Self, String> {
        let mut names = Vec::new();
        let mut rest = path;
        loop {
            let (name, after) = match rest.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"').ok_or_else(|| format!("unterminated quote in {path:?}"))?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => rest.split_at(rest.find('.').unwrap_or(rest.len())),
            };
            if name.is_empty() {
                return Err(format!("empty name in {path:?}"));
            }
            names.push(name.to_string());
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(Self(names)),
                None => return Err(format!("expected '.' after the quoted name in {path:?}")),
            }
        }
    }

    /// The value at this path in `claims`.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |v, name| v.as_object()?.get(name))
    }

    /// Sets `value` at this path in `root`, creating the objects on the way; on a value in the
    /// way that is not an object, the names up to it.
    pub fn set(&self, root: &mut Value, value: Value) -> Result<(), String> {
        let (last, parents) = self.0.split_last().ok_or_else(String::new)?;
        let mut cur = root;
        for (i, name) in parents.iter().enumerate() {
            let upto = || self.0[..=i].join(".");
            let obj = cur.as_object_mut().ok_or_else(upto)?;
            cur = obj.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !cur.is_object() {
                return Err(upto());
            }
        }
        cur.as_object_mut().ok_or_else(|| self.0.join("."))?.insert(last.clone(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::ClaimPath;

    #[test]
    fn dotted_and_quoted_names() {
        let claims = json!({
            "tenant_id": 7,
            "app_metadata": {"tenant": "acme"},
            "https://example.com/tenant_id": "uuid-1",
            "realm_access": {"roles": ["a", "b"]},
            "ns": {"a.b": {"c": 1}}
        });
        let at = |p: &str| ClaimPath::parse(p).expect(p).lookup(&claims).cloned();
        assert_eq!(at("tenant_id"), Some(json!(7)));
        assert_eq!(at("app_metadata.tenant"), Some(json!("acme")));
        assert_eq!(at("\"https://example.com/tenant_id\""), Some(json!("uuid-1")));
        assert_eq!(at("realm_access.roles"), Some(json!(["a", "b"])));
        assert_eq!(at("ns.\"a.b\".c"), Some(json!(1)));
        assert_eq!(at("https://example.com/tenant_id"), None, "unquoted, the dots split it");
        for bad in ["", "a..b", "\"open", "\"a\"b", "a.", ".a", "\"\""] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_creates_the_objects_on_the_way() {
        let mut root = json!({});
        ClaimPath::parse("ns.\"https://x/t\"").unwrap().set(&mut root, json!(3)).unwrap();
        assert_eq!(root, json!({"ns": {"https://x/t": 3}}));
        let mut blocked = json!({"ns": 1});
        assert_eq!(ClaimPath::parse("ns.t").unwrap().set(&mut blocked, json!(3)), Err("ns".into()));
    }
}
