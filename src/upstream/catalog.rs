//! A tokio-postgres client for the proxy's own catalog reads (the doctor), on a socket opened
//! as the relay's server connections are: the same TCP options, TLS per `sslmode` with the
//! same roots and server name, and the same password source; the settings the relay pins as
//! startup parameters go in the `options` parameter (tokio-postgres sends no others).
//! tokio-postgres then does the login (SCRAM without channel binding, as the relay) and
//! gives typed rows. The relay itself never goes through it: it forwards
//! bytes, and the upstream-role check runs on the very connection it is about to lend.

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{UpstreamError, UpstreamTarget, connect};

/// A client and the task that runs its connection.
pub struct Catalog {
    /// Queries go through it.
    pub client: tokio_postgres::Client,
    connection: JoinHandle<()>,
}

impl Catalog {
    /// Ends the session with a Terminate (sent once the client is gone), waiting at most a
    /// second: a caller that returns at once would drop the connection mid-transaction.
    pub async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.connection).await;
    }
}

/// Opens a client to `database` as the proxy's role, within `upstream.connect_timeout_ms`.
pub async fn connect(target: &UpstreamTarget, database: &str) -> Result<Catalog, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, open(target, database)).await.map_err(|_| UpstreamError::Timeout)?
}

async fn open(target: &UpstreamTarget, database: &str) -> Result<Catalog, UpstreamError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    crate::net::tune(&tcp, &target.tcp)?;
    let stream = connect::negotiate_tls(tcp, target).await?;
    let options: Vec<String> = connect::pinned(target, &[])
        .into_iter()
        .map(|(name, value)| format!("-c {}={}", escape(name), escape(value)))
        .collect();
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(database)
        .application_name("rlsproxy")
        .options(options.join(" "))
        .ssl_mode(tokio_postgres::config::SslMode::Disable)
        // As the relay: no password configured is an empty one, which the server refuses.
        .password(target.password().unwrap_or_default());
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await.map_err(from_client)?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "catalog connection ended");
        }
    });
    Ok(Catalog { client, connection })
}

/// A value of the `options` startup parameter, which the server splits at every white-space
/// character (`isspace`) unless a backslash escapes it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The server's own errors keep their SQLSTATE and message, and I/O errors stay I/O errors,
/// as on the relay's connections.
pub fn from_client(e: tokio_postgres::Error) -> UpstreamError {
    if let Some(db) = e.as_db_error() {
        return UpstreamError::Server { code: db.code().code().to_string(), message: db.message().to_string() };
    }
    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        Some(io) => UpstreamError::Io(std::io::Error::new(io.kind(), io.to_string())),
        None => UpstreamError::Protocol(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn options_values_keep_their_spaces_and_backslashes() {
        assert_eq!(escape(r#""$user", public"#), r#""$user",\ public"#);
        assert_eq!(escape(r"a\b"), r"a\\b");
        assert_eq!(escape("a\t-c\tx=1\n"), "a\\\t-c\\\tx=1\\\n");
    }
}
