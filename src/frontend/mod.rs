//! The client side of a connection up to a verified token: TLS negotiation
//! (SSLRequest, GSSENCRequest, PG17 direct TLS), StartupMessage, parameter
//! filtering, cleartext-password authentication whose password is the JWT, and
//! CancelRequest.

pub mod cancel;
pub(crate) mod handshake;
pub mod startup;

pub use handshake::{Accepted, FrontendError, Handshake, accept};
