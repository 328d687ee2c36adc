//! Security policy applied on top of the relay: what context is injected and
//! how, which statements need it in a transaction of its own, which ones pin a
//! client to its server connection, and whether the proxy's upstream role is
//! safe to use at all.

pub mod context;
pub mod guard;
pub mod isolation;
pub mod session_state;
pub mod strict;
pub mod upstream_role;

/// Statement and portal names the proxy owns; clients may not use them.
pub const RESERVED_PREFIX: &[u8] = b"rlsproxy_";
