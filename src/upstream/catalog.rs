//! A tokio-postgres client for the proxy's own catalog reads (the doctor), on a socket opened
//! exactly as the relay's server connections are: the same TCP options, TLS per `sslmode`
//! with the same roots and server name, the same password source and the settings pinned
//! as startup options. tokio-postgres then does the login (SCRAM without channel binding,
//! as the relay) and gives typed rows. The relay itself never goes through it: it forwards
//! bytes, and the upstream-role check runs on the very connection it is about to lend.

use tokio::net::TcpStream;

use super::{UpstreamError, UpstreamTarget, connect};

/// Opens a client to `database` as the proxy's role, within `upstream.connect_timeout_ms`.
/// The connection lives until the client is dropped.
pub async fn connect(target: &UpstreamTarget, database: &str) -> Result<tokio_postgres::Client, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, open(target, database)).await.map_err(|_| UpstreamError::Timeout)?
}

async fn open(target: &UpstreamTarget, database: &str) -> Result<tokio_postgres::Client, UpstreamError> {
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
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(password) = target.password() {
        config.password(password);
    }
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await.map_err(from_client)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "catalog connection ended");
        }
    });
    Ok(client)
}

/// A value of the `options` startup parameter, which the server splits at spaces.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

/// The server's own errors keep their SQLSTATE and message, as on the relay's connections.
pub fn from_client(e: tokio_postgres::Error) -> UpstreamError {
    match e.as_db_error() {
        Some(db) => UpstreamError::Server { code: db.code().code().to_string(), message: db.message().to_string() },
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
    }
}
