//! rlsproxy: a PostgreSQL wire proxy that injects a verified tenant context
//! at the start of every transaction.

pub mod auth;
pub mod config;
