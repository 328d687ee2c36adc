//! Every error the proxy itself sends a client, in one table: SQLSTATE, severity, message
//! and hint per kind. docs/troubleshooting.md "Errors the proxy sends" is
//! [`ProxyError::markdown_table`];
//! `tests/layout.rs` checks that the two agree. (Token errors map through
//! `AuthError::sqlstate`; errors of the server reach the client as the server sent them.)

use super::error::{PgError, Severity};

/// An error of the proxy's own, with what it needs to say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant's `spec().when` says when it is sent; fields: the values its message names
pub enum ProxyError {
    UnsupportedProtocol,
    TlsRequired { client: String },
    ExpectedPassword { tag: char },
    PasswordTooLong { len: i32, limit: usize },
    NotAJwt,
    NoUser,
    Replication,
    DatabaseNotAllowed { name: String },
    StartupParameter { name: String, allowed: &'static [&'static str] },
    OptionsSetting { name: String, allowed: &'static [&'static str] },
    OptionsWord { word: String, allowed: &'static [&'static str] },
    ClientEncoding { value: String },
    TooManyClients,
    PoolBusy { reason: String, fatal: bool },
    SessionRefused { code: String, message: String, fatal: bool },
    UpstreamUnavailable { reason: String, fatal: bool },
    InjectionFailed { code: String, message: String, hint: Option<String>, fatal: bool },
    UpstreamClosed,
    UpstreamLost { reason: String },
    ServerMessageTooLarge { tag: char, len: usize, limit: usize },
    UnsafeServerSetting { reason: String },
    CopyBoth,
    OutOfStep { detail: String },
    AmbiguousCopy { detail: String },
    InvalidMessageType { tag: u8 },
    MalformedMessage { tag: char },
    ClientMessageTooLarge { detail: String },
    BufferBudget { len: usize, limit: usize },
    ClientProtocol { detail: String },
    ReservedName,
    Refused { what: String, rule: &'static str },
    RefusedChannel { what: String },
    RefusedLock { what: String },
    ChannelTooLong { detail: String, bytes: usize },
    StatementTooLong { len: usize, limit: usize },
    Syntax { message: String, position: Option<u32> },
    PinLimit { cap: usize },
    StatementExists { name: String },
    StatementMissing { name: String },
    StalePlan,
    TokenExpired,
    IdleInTransaction,
    ShuttingDown,
}

/// One row of the table. `code` empty: the server's own SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// When it is sent.
    pub when: &'static str,
    /// `ERROR` or `FATAL`; `None`: either, as the situation has it.
    pub severity: Option<Severity>,
    /// SQLSTATE.
    pub code: &'static str,
    /// Message, `{field}` where a value goes.
    pub message: &'static str,
    /// Hint, likewise.
    pub hint: Option<&'static str>,
}

const fn spec(
    when: &'static str,
    severity: Severity,
    code: &'static str,
    message: &'static str,
    hint: Option<&'static str>,
) -> Spec {
    Spec { when, severity: Some(severity), code, message, hint }
}

const ALLOWED_HINT: &str = "Startup parameters allowed: {allowed}.";
const CHANNEL_HINT: &str = "LISTEN/NOTIFY channels are per tenant: name them in LISTEN, UNLISTEN and NOTIFY, or \
                            as a string constant in pg_notify('channel', payload); triggers use \
                            rlsproxy.notify(channel, payload).";
const LOCK_HINT: &str = "Advisory lock keys are per tenant: call pg_advisory_lock(key) and the other advisory lock \
                         functions by name with their keys; functions in the database use rlsproxy.advisory_key.";

use Severity::{Error, Fatal};

impl ProxyError {
    /// Its row of the table.
    pub fn spec(&self) -> Spec {
        use ProxyError::*;
        let either = |when, code, message| Spec { when, severity: None, code, message, hint: None };
        match self {
            UnsupportedProtocol => spec(
                "A startup packet of a protocol version other than 3.",
                Fatal,
                "0A000",
                "unsupported frontend protocol: rlsproxy speaks 3.0",
                None,
            ),
            TlsRequired { .. } => spec(
                "A connection without TLS where `listen.require_tls` wants it.",
                Fatal,
                "28000",
                "rlsproxy requires TLS for connections from {client}",
                Some("Connect with sslmode=require: the token is a password and must not cross the network in clear."),
            ),
            ExpectedPassword { .. } => spec(
                "Something other than a PasswordMessage after the password request.",
                Fatal,
                "08P01",
                "expected a password message, got message type '{tag}'",
                None,
            ),
            PasswordTooLong { .. } => spec(
                "A PasswordMessage longer than a token may be.",
                Fatal,
                "28P01",
                "password message of {len} bytes refused: a token is at most {limit} bytes",
                None,
            ),
            NotAJwt => spec(
                "An empty or non-UTF-8 password.",
                Fatal,
                "28P01",
                "password authentication failed: the password must be a JWT",
                None,
            ),
            NoUser => spec(
                "A startup packet without `user`.",
                Fatal,
                "28000",
                "no PostgreSQL user name specified in startup packet",
                None,
            ),
            Replication => spec(
                "A replication connection.",
                Fatal,
                "0A000",
                "rlsproxy does not accept replication connections",
                None,
            ),
            DatabaseNotAllowed { .. } => spec(
                "A database outside `upstream.allowed_databases`.",
                Fatal,
                "3D000",
                "rlsproxy does not serve database \"{name}\"",
                Some("The databases clients may use are upstream.allowed_databases."),
            ),
            StartupParameter { .. } => spec(
                "A startup parameter off the allow-list (`allowed`).",
                Fatal,
                "42501",
                "rlsproxy does not accept the startup parameter \"{name}\"",
                Some(ALLOWED_HINT),
            ),
            OptionsSetting { .. } => spec(
                "A `-c` setting in `options` off the allow-list.",
                Fatal,
                "42501",
                "rlsproxy does not accept the setting \"{name}\" in the \"options\" startup parameter",
                Some(ALLOWED_HINT),
            ),
            OptionsWord { .. } => spec(
                "Something other than `-c name=value` in `options`.",
                Fatal,
                "42501",
                "rlsproxy does not accept \"{word}\" in the \"options\" startup parameter: only -c name=value settings",
                Some(ALLOWED_HINT),
            ),
            ClientEncoding { .. } => spec(
                "A client encoding whose characters may hide quote or backslash bytes.",
                Fatal,
                "42501",
                "rlsproxy does not accept client_encoding \"{value}\"",
                Some("Its characters may contain ASCII quote or backslash bytes; use UTF8."),
            ),
            TooManyClients => spec(
                "More than `listen.max_clients` connections.",
                Fatal,
                "53300",
                "sorry, too many clients already (rlsproxy listen.max_clients)",
                None,
            ),
            PoolBusy { .. } => Spec {
                hint: Some("Every upstream connection is in use; retry later or raise pool.size."),
                ..either(
                    "No server connection could be lent in time, or too many clients wait for one.",
                    "53300",
                    "rlsproxy: {reason}",
                )
            },
            SessionRefused { .. } => either(
                "The server refused to start a session with the client's settings.",
                "",
                "rlsproxy: cannot start the session: {message}",
            ),
            UpstreamUnavailable { .. } => either(
                "No server connection could be opened.",
                "08006",
                "rlsproxy: the upstream server is unavailable: {reason}",
            ),
            InjectionFailed { .. } => either(
                "The tenant context could not be set: the server's error, and no statement ran.",
                "",
                "rlsproxy: could not set the tenant context, so no statement of this transaction ran: {message}",
            ),
            UpstreamClosed => spec(
                "The server connection closed.",
                Fatal,
                "08006",
                "rlsproxy: the upstream server closed the connection",
                None,
            ),
            UpstreamLost { .. } => spec(
                "The server connection failed.",
                Fatal,
                "08006",
                "rlsproxy: lost the upstream connection: {reason}",
                None,
            ),
            ServerMessageTooLarge { .. } => spec(
                "A server message over `limits.max_message_bytes`.",
                Fatal,
                "54000",
                "rlsproxy: the server sent a message '{tag}' of {len} bytes, more than limits.max_message_bytes \
                 ({limit}); the session ends",
                None,
            ),
            UnsafeServerSetting { .. } => spec(
                "The server reported a setting that breaks the guard's assumptions.",
                Fatal,
                "42501",
                "rlsproxy: {reason}; the session ends",
                None,
            ),
            CopyBoth => spec(
                "A COPY BOTH (replication) stream.",
                Fatal,
                "0A000",
                "rlsproxy does not relay COPY BOTH (replication) streams",
                None,
            ),
            OutOfStep { .. } => spec(
                "The server's replies do not answer what was sent.",
                Fatal,
                "08P01",
                "rlsproxy: the upstream server's replies are out of step: {detail}",
                None,
            ),
            AmbiguousCopy { .. } => spec(
                "The client sent other messages after COPY data without ending it.",
                Fatal,
                "08P01",
                "rlsproxy: {detail}, so the session ends",
                None,
            ),
            InvalidMessageType { .. } => {
                spec("A message type no frontend sends.", Fatal, "08P01", "invalid frontend message type {tag}", None)
            }
            MalformedMessage { .. } => spec(
                "A message whose fields cannot be read.",
                Fatal,
                "08P01",
                "rlsproxy: malformed '{tag}' message",
                None,
            ),
            ClientMessageTooLarge { .. } => spec(
                "A client message over `limits.max_message_bytes`.",
                Fatal,
                "54000",
                "rlsproxy: {detail}",
                Some("Raise limits.max_message_bytes if such messages are expected."),
            ),
            BufferBudget { .. } => spec(
                "A large client message while others fill `limits.max_buffered_bytes`.",
                Fatal,
                "53200",
                "rlsproxy: too many large messages are being received at once: this one ({len} bytes) would \
                 pass limits.max_buffered_bytes ({limit})",
                Some("Retry; raise limits.max_buffered_bytes if the process has the memory."),
            ),
            ClientProtocol { .. } => {
                spec("Bytes that are not the protocol.", Fatal, "08P01", "rlsproxy: {detail}", None)
            }
            ReservedName => spec(
                "A statement or portal name under the proxy's reserved prefix.",
                Error,
                "42501",
                "statement and portal names starting with \"rlsproxy_\" are reserved by rlsproxy",
                None,
            ),
            Refused { .. } => spec(
                "SQL the guard refuses.",
                Error,
                "42501",
                "rlsproxy refused the statement: {what} (rule {rule})",
                Some("The tenant context comes from the token and cannot be changed or escaped with SQL."),
            ),
            RefusedChannel { .. } => spec(
                "A LISTEN/NOTIFY channel the guard cannot scope to the tenant.",
                Error,
                "42501",
                "rlsproxy refused the statement: {what} (rule notify_channel)",
                Some(CHANNEL_HINT),
            ),
            RefusedLock { .. } => spec(
                "An advisory lock call the guard cannot scope to the tenant.",
                Error,
                "42501",
                "rlsproxy refused the statement: {what} (rule advisory_lock)",
                Some(LOCK_HINT),
            ),
            ChannelTooLong { .. } => spec(
                "A channel name too long once scoped.",
                Error,
                "42622",
                "rlsproxy: {detail}",
                Some("The proxy prefixes each tenant's channels; {bytes} bytes are left."),
            ),
            StatementTooLong { .. } => spec(
                "SQL longer than `guard.max_statement_bytes`.",
                Error,
                "54000",
                "rlsproxy refused the statement: {len} bytes of SQL text, more than guard.max_statement_bytes \
                 ({limit}) (rule statement_too_long)",
                Some("Send large values as bind parameters, or raise [guard] max_statement_bytes."),
            ),
            Syntax { .. } => spec(
                "SQL that does not parse: PostgreSQL's own message and position.",
                Error,
                "42601",
                "{message}",
                None,
            ),
            PinLimit { .. } => spec(
                "A session-state statement past `pool.max_pinned_per_tenant`.",
                Error,
                "53300",
                "rlsproxy: this tenant already has {cap} sessions holding a server connection for their session \
                 state (pool.max_pinned_per_tenant)",
                Some(
                    "In transaction pooling, SET, LISTEN, temporary tables and the like keep a server connection \
                     for the whole session; use SET LOCAL, or close other sessions.",
                ),
            ),
            StatementExists { .. } => spec(
                "A client statement name prepared twice (transaction pooling).",
                Error,
                "42P05",
                "prepared statement \"{name}\" already exists",
                None,
            ),
            StatementMissing { .. } => spec(
                "A client statement name never prepared (transaction pooling).",
                Error,
                "26000",
                "prepared statement \"{name}\" does not exist",
                None,
            ),
            StalePlan => spec(
                "A statement prepared again with another result shape (transaction pooling).",
                Error,
                "0A000",
                "cached plan must not change result type",
                None,
            ),
            TokenExpired => spec(
                "The token expired during the session.",
                Fatal,
                "28000",
                "rlsproxy: the token has expired; no further transaction can start",
                Some("Reconnect with a fresh token."),
            ),
            IdleInTransaction => spec(
                "Idle in a transaction past `pool.idle_transaction_timeout_s`.",
                Fatal,
                "25P03",
                "terminating connection due to idle-in-transaction timeout (rlsproxy pool.idle_transaction_timeout_s)",
                None,
            ),
            ShuttingDown => spec(
                "The proxy is shutting down.",
                Fatal,
                "57P01",
                "terminating connection because rlsproxy is shutting down",
                None,
            ),
        }
    }

    /// The values of the `{field}`s, and what the row leaves to the situation.
    fn fill(&self) -> Fill {
        use ProxyError::*;
        let one = |name, value: String| Fill { values: vec![(name, value)], ..Fill::default() };
        match self {
            TlsRequired { client } => one("client", client.clone()),
            ExpectedPassword { tag } => one("tag", tag.to_string()),
            PasswordTooLong { len, limit } => {
                Fill { values: vec![("len", len.to_string()), ("limit", limit.to_string())], ..Fill::default() }
            }
            StartupParameter { name, allowed } | OptionsSetting { name, allowed } => {
                Fill { values: vec![("name", name.clone()), ("allowed", allowed.join(", "))], ..Fill::default() }
            }
            OptionsWord { word, allowed } => {
                Fill { values: vec![("word", word.clone()), ("allowed", allowed.join(", "))], ..Fill::default() }
            }
            ClientEncoding { value } => one("value", value.clone()),
            DatabaseNotAllowed { name } => one("name", name.clone()),
            PoolBusy { reason, fatal } | UpstreamUnavailable { reason, fatal } => {
                Fill { fatal: Some(*fatal), ..one("reason", reason.clone()) }
            }
            SessionRefused { code, message, fatal } => {
                Fill { fatal: Some(*fatal), code: Some(code.clone()), ..one("message", message.clone()) }
            }
            InjectionFailed { code, message, hint, fatal } => Fill {
                fatal: Some(*fatal),
                code: Some(code.clone()),
                hint: hint.clone(),
                ..one("message", message.clone())
            },
            UpstreamLost { reason } | UnsafeServerSetting { reason } => one("reason", reason.clone()),
            ServerMessageTooLarge { tag, len, limit } => Fill {
                values: vec![("tag", tag.to_string()), ("len", len.to_string()), ("limit", limit.to_string())],
                ..Fill::default()
            },
            OutOfStep { detail } | AmbiguousCopy { detail } | ClientMessageTooLarge { detail } => {
                one("detail", detail.clone())
            }
            BufferBudget { len, limit } => {
                Fill { values: vec![("len", len.to_string()), ("limit", limit.to_string())], ..Fill::default() }
            }
            ClientProtocol { detail } => one("detail", detail.clone()),
            InvalidMessageType { tag } => one("tag", tag.to_string()),
            MalformedMessage { tag } => one("tag", tag.to_string()),
            Refused { what, rule } => {
                Fill { values: vec![("what", what.clone()), ("rule", rule.to_string())], ..Fill::default() }
            }
            RefusedChannel { what } | RefusedLock { what } => one("what", what.clone()),
            ChannelTooLong { detail, bytes } => {
                Fill { values: vec![("detail", detail.clone()), ("bytes", bytes.to_string())], ..Fill::default() }
            }
            StatementTooLong { len, limit } => {
                Fill { values: vec![("len", len.to_string()), ("limit", limit.to_string())], ..Fill::default() }
            }
            Syntax { message, position } => Fill { position: *position, ..one("message", message.clone()) },
            PinLimit { cap } => one("cap", cap.to_string()),
            StatementExists { name } | StatementMissing { name } => one("name", name.clone()),
            UnsupportedProtocol | NotAJwt | NoUser | Replication | TooManyClients | UpstreamClosed | CopyBoth
            | ReservedName | StalePlan | TokenExpired | IdleInTransaction | ShuttingDown => Fill::default(),
        }
    }

    /// One of each kind, for the table of docs/troubleshooting.md.
    pub fn catalog() -> Vec<ProxyError> {
        use ProxyError::*;
        let s = String::new;
        vec![
            UnsupportedProtocol,
            TlsRequired { client: s() },
            ExpectedPassword { tag: ' ' },
            PasswordTooLong { len: 0, limit: 0 },
            NotAJwt,
            NoUser,
            Replication,
            DatabaseNotAllowed { name: s() },
            StartupParameter { name: s(), allowed: &[] },
            OptionsSetting { name: s(), allowed: &[] },
            OptionsWord { word: s(), allowed: &[] },
            ClientEncoding { value: s() },
            TooManyClients,
            PoolBusy { reason: s(), fatal: false },
            SessionRefused { code: s(), message: s(), fatal: false },
            UpstreamUnavailable { reason: s(), fatal: false },
            InjectionFailed { code: s(), message: s(), hint: None, fatal: false },
            UpstreamClosed,
            UpstreamLost { reason: s() },
            ServerMessageTooLarge { tag: ' ', len: 0, limit: 0 },
            UnsafeServerSetting { reason: s() },
            CopyBoth,
            OutOfStep { detail: s() },
            AmbiguousCopy { detail: s() },
            InvalidMessageType { tag: 0 },
            MalformedMessage { tag: ' ' },
            ClientMessageTooLarge { detail: s() },
            BufferBudget { len: 0, limit: 0 },
            ClientProtocol { detail: s() },
            ReservedName,
            Refused { what: s(), rule: "" },
            RefusedChannel { what: s() },
            RefusedLock { what: s() },
            ChannelTooLong { detail: s(), bytes: 0 },
            StatementTooLong { len: 0, limit: 0 },
            Syntax { message: s(), position: None },
            PinLimit { cap: 0 },
            StatementExists { name: s() },
            StatementMissing { name: s() },
            StalePlan,
            TokenExpired,
            IdleInTransaction,
            ShuttingDown,
        ]
    }
}

impl ProxyError {
    /// The table as docs/troubleshooting.md shows it: one row per kind, `<field>` where a value goes.
    pub fn markdown_table() -> String {
        let mut out = String::from("| when | SQLSTATE | severity | message | hint |\n|---|---|---|---|---|\n");
        for e in Self::catalog() {
            let spec = e.spec();
            let code = if spec.code.is_empty() { "the server's".to_string() } else { format!("`{}`", spec.code) };
            let severity = spec.severity.map_or("ERROR or FATAL", Severity::as_str);
            let shown = |text: &str| text.replace('{', "<").replace('}', ">").replace('|', "\\|");
            let hint = spec.hint.map(shown).unwrap_or_default();
            out += &format!("| {} | {code} | {severity} | {} | {hint} |\n", shown(spec.when), shown(spec.message));
        }
        out
    }
}

/// What [`ProxyError::fill`] gives a row.
#[derive(Default)]
struct Fill {
    values: Vec<(&'static str, String)>,
    /// For rows of either severity.
    fatal: Option<bool>,
    /// For rows with the server's SQLSTATE.
    code: Option<String>,
    /// The server's hint, for rows that pass it on.
    hint: Option<String>,
    position: Option<u32>,
}

fn substitute(template: &str, values: &[(&'static str, String)]) -> String {
    values.iter().fold(template.to_string(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
}

impl From<ProxyError> for PgError {
    fn from(e: ProxyError) -> Self {
        let spec = e.spec();
        let fill = e.fill();
        let severity = spec.severity.unwrap_or(if fill.fatal == Some(true) { Fatal } else { Error });
        PgError {
            severity,
            code: fill.code.unwrap_or_else(|| spec.code.to_string()),
            message: substitute(spec.message, &fill.values),
            hint: fill.hint.or_else(|| spec.hint.map(|h| substitute(h, &fill.values))),
            position: fill.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_one_of_each_kind() {
        let kinds: std::collections::HashSet<_> = ProxyError::catalog().iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), ProxyError::catalog().len());
        // Every field a message or hint names is filled.
        for e in ProxyError::catalog() {
            let pg = PgError::from(e.clone());
            for text in [Some(pg.message), pg.hint].into_iter().flatten() {
                assert!(!text.contains('{'), "{e:?}: {text}");
            }
        }
    }

    #[test]
    fn rows_of_either_severity_follow_the_situation() {
        let busy = |fatal| PgError::from(ProxyError::PoolBusy { reason: "timed out".into(), fatal });
        assert_eq!((busy(true).severity, busy(false).severity), (Fatal, Error));
        let refused =
            PgError::from(ProxyError::SessionRefused { code: "3D000".into(), message: "no".into(), fatal: true });
        assert_eq!(
            (refused.code.as_str(), refused.message.as_str()),
            ("3D000", "rlsproxy: cannot start the session: no")
        );
    }
}
