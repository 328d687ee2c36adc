//! Which startup parameters a client may set. A client must not reach the
//! server's configuration through the startup packet (`search_path`, `replication`,
//! `options=-c ...`): only an allow-list of harmless session settings is forwarded,
//! as startup parameters of the server connections that serve the client. Settings in `options`
//! (`-c name=value`, `--name=value`; libpq's `PGOPTIONS`) are read as PostgreSQL reads
//! them and held to the same allow-list.

use crate::protocol::frontend::StartupPacket;
use crate::protocol::{PgError, ProxyError};

/// Settings a client may give at startup, with the server's canonical spelling.
pub const ALLOWED_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
];

/// A startup packet reduced to what the proxy acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStartup {
    /// `user` as sent (logged; the token decides who the client is).
    pub user: String,
    /// `database`, defaulting to `user` as the server does.
    pub database: String,
    /// Allowed settings to apply upstream, canonical names.
    pub settings: Vec<(String, String)>,
    /// `_pq_.` protocol options, none of which are supported.
    pub unsupported_options: Vec<String>,
}

/// Filters a startup packet; an error names the offending parameter.
pub fn filter(packet: &StartupPacket) -> Result<ClientStartup, PgError> {
    let user = packet.get("user").filter(|u| !u.is_empty()).ok_or(ProxyError::NoUser)?.to_string();
    let mut out = ClientStartup {
        database: packet.get("database").filter(|d| !d.is_empty()).unwrap_or(&user).to_string(),
        user,
        settings: Vec::new(),
        unsupported_options: Vec::new(),
    };
    // PostgreSQL applies `options` first: the other parameters override it.
    let mut from_options = Vec::new();
    for (name, value) in &packet.params {
        match name.as_str() {
            "user" | "database" => {}
            "replication" => {
                return Err(ProxyError::Replication.into());
            }
            "options" => {
                for (n, v) in option_settings(value)? {
                    from_options.push(
                        allowed(&n, v)
                            .map_err(|_| ProxyError::OptionsSetting { name: n.clone(), allowed: ALLOWED_SETTINGS })?,
                    );
                }
            }
            n if n.starts_with("_pq_.") => out.unsupported_options.push(n.to_string()),
            n => out.settings.push(allowed(n, value.clone())?),
        }
    }
    from_options.retain(|(n, _)| !out.settings.iter().any(|(s, _)| s == n));
    from_options.append(&mut out.settings);
    out.settings = from_options;
    Ok(out)
}

/// The canonical name and value of setting `name`, if a client may give it.
fn allowed(name: &str, value: String) -> Result<(String, String), PgError> {
    if name.eq_ignore_ascii_case("client_encoding") && !crate::policy::guard::encoding_is_safe(&value) {
        return Err(ProxyError::ClientEncoding { value }.into());
    }
    match ALLOWED_SETTINGS.iter().find(|a| a.eq_ignore_ascii_case(name)) {
        Some(canonical) => Ok(((*canonical).to_string(), value)),
        None => Err(ProxyError::StartupParameter { name: name.to_string(), allowed: ALLOWED_SETTINGS }.into()),
    }
}

/// The settings of an `options` value, in order: words split at unescaped whitespace, a
/// backslash taking the next character literally (PostgreSQL's `pg_split_opts`), then
/// `-c name=value`, `-cname=value` or `--name=value` (dashes in a name read as
/// underscores). Any other server switch is refused.
fn option_settings(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace() && *c != '\x0b') {
            match c {
                '\\' => word.extend(chars.next()),
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        chars.next();
    }
    let refused = |word: &str| PgError::from(ProxyError::OptionsWord { word: word.into(), allowed: ALLOWED_SETTINGS });
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = match (word.strip_prefix("--"), word.strip_prefix("-c")) {
            (Some(s), _) if !s.is_empty() => s.to_string(),
            (None, Some("")) => words.next().ok_or_else(|| refused(&word))?,
            (None, Some(s)) => s.to_string(),
            _ => return Err(refused(&word)),
        };
        let Some((name, value)) = setting.split_once('=') else { return Err(refused(&setting)) };
        settings.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(params: &[(&str, &str)]) -> StartupPacket {
        StartupPacket {
            version: crate::protocol::PROTOCOL_3_0,
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn forwards_only_allowed_settings() {
        let s = filter(&packet(&[("user", "alice"), ("datestyle", "ISO"), ("_pq_.x", "1")]));
        assert_eq!(
            s,
            Ok(ClientStartup {
                user: "alice".into(),
                database: "alice".into(),
                settings: vec![("DateStyle".into(), "ISO".into())],
                unsupported_options: vec!["_pq_.x".into()],
            })
        );
        let e = filter(&packet(&[("user", "a"), ("search_path", "evil")])).err();
        assert_eq!(
            e.map(|e| (e.code, e.message)),
            Some(("42501".into(), "rlsproxy does not accept the startup parameter \"search_path\"".into()))
        );
        let e = filter(&packet(&[("user", "a"), ("options", "-c app.current_tenant=2")])).err();
        assert_eq!(
            e.map(|e| (e.code, e.message)),
            Some((
                "42501".into(),
                "rlsproxy does not accept the setting \"app.current_tenant\" in the \"options\" startup parameter"
                    .into()
            ))
        );
        let e = filter(&packet(&[("user", "a"), ("replication", "database")])).err();
        assert_eq!(e.map(|e| e.code), Some("0A000".into()));
        let e = filter(&packet(&[("database", "a")])).err();
        assert_eq!(e.map(|e| e.code), Some("28000".into()));
    }

    #[test]
    fn options_settings_are_read_as_postgresql_reads_them() {
        let settings = |options: &str, rest: &[(&str, &str)]| {
            let mut params = vec![("user", "a"), ("options", options)];
            params.extend_from_slice(rest);
            filter(&packet(&params)).map(|s| s.settings).map_err(|e| e.message)
        };
        let pairs = |p: &[(&str, &str)]| Ok(p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
        assert_eq!(
            settings(" -c application_name=x\\ y\t--statement-timeout=5s -cDateStyle=ISO\\,\\ DMY ", &[]),
            pairs(&[("application_name", "x y"), ("statement_timeout", "5s"), ("DateStyle", "ISO, DMY")])
        );
        // A startup parameter overrides the same setting in options, as in PostgreSQL.
        assert_eq!(
            settings("-c lock_timeout=1s -c application_name=o", &[("application_name", "p")]),
            pairs(&[("lock_timeout", "1s"), ("application_name", "p")])
        );
        assert_eq!(settings("  ", &[]), pairs(&[]));
        for (options, refused) in [
            ("-c search_path=evil", "the setting \"search_path\""),
            ("--role=admin_role", "the setting \"role\""),
            ("-c client_encoding=SJIS", "the setting \"client_encoding\""),
            ("-B 100", "\"-B\""),
            ("-c statement_timeout", "\"statement_timeout\""),
            ("-c", "\"-c\""),
        ] {
            let message = settings(options, &[]).err().unwrap_or_default();
            assert!(message.starts_with(&format!("rlsproxy does not accept {refused} in")), "{options}: {message}");
        }
    }
}
