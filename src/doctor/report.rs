//! The doctor's output: text for people (grouped, one line of fix per finding) and JSON for
//! pipelines. The JSON shape is documented in docs/doctor.md ("Output") and is stable:
//! fields may be added, none renamed or removed.

use serde::Serialize;

use super::{Finding, Group, Severity};

/// The result of one audit.
#[derive(Debug, Clone)]
pub struct Report {
    /// Database audited.
    pub database: String,
    /// Role the audit ran as (`upstream.user`).
    pub user: String,
    /// Findings in report order (group, object, check).
    pub findings: Vec<Finding>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    database: &'a str,
    user: &'a str,
    errors: usize,
    warnings: usize,
    findings: Vec<JsonFinding<'a>>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    check: &'a str,
    severity: &'a str,
    object: &'a str,
    message: &'a str,
    fix: &'a str,
}

impl Report {
    /// A report of `findings` (sorted here into report order).
    pub fn new(database: String, user: String, mut findings: Vec<Finding>) -> Self {
        findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        Self { database, user, findings }
    }

    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }

    /// The JSON document, pretty-printed.
    pub fn to_json(&self) -> String {
        let report = JsonReport {
            database: &self.database,
            user: &self.user,
            errors: self.count(Severity::Error),
            warnings: self.count(Severity::Warning),
            findings: self
                .findings
                .iter()
                .map(|f| JsonFinding {
                    check: f.check.id(),
                    severity: f.severity.as_str(),
                    object: &f.object,
                    message: &f.message,
                    fix: &f.fix,
                })
                .collect(),
        };
        // Serialising strings and numbers cannot fail; an empty document would be noticed.
        serde_json::to_string_pretty(&report).unwrap_or_default()
    }

    /// The text report: a summary line, then the findings grouped, each with its fix.
    pub fn to_text(&self) -> String {
        let mut out = format!("rlsproxy doctor: database {}, as {}: ", self.database, self.user);
        if self.findings.is_empty() {
            out.push_str("no findings\n");
            return out;
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{} ({}, {})\n",
            plural(self.findings.len(), "finding"),
            plural(self.count(Severity::Error), "error"),
            plural(self.count(Severity::Warning), "warning")
        ));
        let mut group: Option<Group> = None;
        for f in &self.findings {
            if group != Some(f.check.group()) {
                group = Some(f.check.group());
                out.push_str(&format!("\n{}\n", f.check.group().title()));
            }
            out.push_str(&format!("  {:<7} {}: {}\n", f.severity.as_str(), f.object, f.message));
            out.push_str(&format!("          [{}] fix: {}\n", f.check.id(), f.fix));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn report() -> Report {
        let findings = vec![
            Finding::new(Check::TenantIndexMissing, Severity::Warning, "table public.t", "no index", "CREATE INDEX"),
            Finding::new(Check::ProxyUserBypassRls, Severity::Error, "role app_proxy", "bypasses", "ALTER ROLE"),
            Finding::new(Check::RlsDisabled, Severity::Error, "table public.t", "off", "ALTER TABLE"),
        ];
        Report::new("app".into(), "app_proxy".into(), findings)
    }

    #[test]
    fn json_has_the_documented_shape() {
        let value: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        assert_eq!((value["database"].as_str(), value["user"].as_str()), (Some("app"), Some("app_proxy")));
        assert_eq!((value["errors"].as_u64(), value["warnings"].as_u64()), (Some(2), Some(1)));
        let findings = value["findings"].as_array().unwrap();
        let first = findings[0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(keys, ["check", "fix", "message", "object", "severity"]);
        let checks: Vec<&str> = findings.iter().map(|f| f["check"].as_str().unwrap()).collect();
        assert_eq!(checks, ["proxy_user_bypassrls", "rls_disabled", "tenant_index_missing"]);
        assert_eq!(first["severity"], "error");
    }

    #[test]
    fn text_groups_findings_with_one_fix_line_each() {
        let text = report().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "rlsproxy doctor: database app, as app_proxy: 3 findings (2 errors, 1 warning)");
        assert_eq!(lines[2], "Upstream role");
        assert_eq!(lines[3], "  error   role app_proxy: bypasses");
        assert_eq!(lines[4], "          [proxy_user_bypassrls] fix: ALTER ROLE");
        assert_eq!(lines[6], "Tables");
        assert_eq!(text.matches("fix: ").count(), 3);
        let empty = Report::new("app".into(), "app_proxy".into(), vec![]);
        assert_eq!(empty.to_text(), "rlsproxy doctor: database app, as app_proxy: no findings\n");
    }
}
