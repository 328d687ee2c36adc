//! rlsproxy: a PostgreSQL wire proxy that makes row-level-security
//! multi-tenancy an infrastructure guarantee. Clients log in with a JWT as
//! the password; the proxy verifies it and sets the tenant context on the
//! upstream connection at the start of every transaction.
//!
//! # Layout
//! A client connection flows through the modules in this order:
//! - [`server`]: listener, one task and tracing span per client, graceful shutdown.
//! - [`shared`]: the state every session shares, built from the configuration; the
//!   frontend, session, admin and reload modules hold it, and nothing it uses holds it back
//!   (`tests/layout.rs` keeps the module graph free of cycles).
//! - [`frontend`]: TLS negotiation, StartupMessage and parameter filtering,
//!   cleartext-password auth carrying the JWT, CancelRequest.
//! - [`auth`]: JWT verification into a [`auth::TenantContext`]; token minting.
//! - [`session`]: the client's session: startup, the relay loop, the tracker of
//!   replies owed, transaction lending (transaction pooling), context injection,
//!   named-statement translation.
//! - [`policy`]: the statement guard, what is injected and how (and strict mode's
//!   signed value), statements that need their own transaction or pin a client,
//!   the upstream-role safety check.
//! - [`pool`]: bounded upstream connections per database and startup settings,
//!   tenant affinity, fair queueing, reset before reuse.
//! - [`upstream`]: connecting and authenticating to PostgreSQL (TLS, SCRAM); the same
//!   socket set-up under a tokio-postgres client for the doctor's catalog reads.
//! - [`protocol`]: wire framing and the few messages the proxy reads or writes.
//! - [`net`], [`tls`]: plain/TLS streams and rustls configurations.
//! - [`config`]: the typed configuration and its validation.
//! - [`reload`]: SIGHUP and the file watch: the configuration read again, validated, built
//!   and swapped in whole ([`reload::Live`]), or refused with the running one kept.
//! - [`logging`]: the log output, and the handle that changes its filter on reload.
//!
//! Beside the data path, [`doctor`] audits the database's row-level-security set-up through
//! that client (`rlsproxy doctor`, and as warnings at start-up), and
//! [`admin`] serves probes, metrics and the admin views on a listener of its own.

pub mod admin;
pub mod auth;
pub mod config;
pub mod doctor;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod net;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod session;
pub mod shared;
pub mod tls;
pub mod upstream;

pub use server::{Proxy, ShutdownHandle};
