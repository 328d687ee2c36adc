//! Which startup parameters a client may set. A client must not reach the
//! server's configuration through the startup packet (`options=-c ...`,
//! `search_path`, `replication`): only an allow-list of harmless session
//! settings is forwarded, each applied on the server connection with bind
//! parameters.

use crate::protocol::PgError;
use crate::protocol::frontend::StartupPacket;

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
    let user = packet
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| PgError::fatal("28000", "no PostgreSQL user name specified in startup packet"))?
        .to_string();
    let mut out = ClientStartup {
        database: packet.get("database").filter(|d| !d.is_empty()).unwrap_or(&user).to_string(),
        user,
        settings: Vec::new(),
        unsupported_options: Vec::new(),
    };
    for (name, value) in &packet.params {
        match name.as_str() {
            "user" | "database" => {}
            "replication" => {
                return Err(PgError::fatal("0A000", "rlsproxy does not accept replication connections"));
            }
            "options" => {
                return Err(PgError::fatal(
                    "42501",
                    "rlsproxy does not accept the \"options\" startup parameter: server settings cannot be \
                     changed at connection time through the proxy",
                )
                .with_hint(allowed_hint()));
            }
            n if n.starts_with("_pq_.") => out.unsupported_options.push(n.to_string()),
            n if n.eq_ignore_ascii_case("client_encoding") && !crate::policy::guard::encoding_is_safe(value) => {
                return Err(PgError::fatal("42501", format!("rlsproxy does not accept client_encoding \"{value}\""))
                    .with_hint("Its characters may contain ASCII quote or backslash bytes; use UTF8."));
            }
            n => match ALLOWED_SETTINGS.iter().find(|a| a.eq_ignore_ascii_case(n)) {
                Some(canonical) => out.settings.push(((*canonical).to_string(), value.clone())),
                None => {
                    return Err(PgError::fatal(
                        "42501",
                        format!("rlsproxy does not accept the startup parameter \"{n}\""),
                    )
                    .with_hint(allowed_hint()));
                }
            },
        }
    }
    Ok(out)
}

fn allowed_hint() -> String {
    format!("Startup parameters allowed: {}.", ALLOWED_SETTINGS.join(", "))
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
        assert_eq!(e.map(|e| e.code), Some("42501".into()));
        let e = filter(&packet(&[("user", "a"), ("replication", "database")])).err();
        assert_eq!(e.map(|e| e.code), Some("0A000".into()));
        let e = filter(&packet(&[("database", "a")])).err();
        assert_eq!(e.map(|e| e.code), Some("28000".into()));
    }
}
