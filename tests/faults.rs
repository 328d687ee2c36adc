//! Fault tests: the proxy in front of the throwaway cluster when the network, the server or a
//! client fails (docs/operations.md, "Reliability"). Each test states what the client sees and what the
//! proxy gives back, within a bound.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "faults/abandoned.rs"]
mod abandoned;
#[path = "faults/blackhole.rs"]
mod blackhole;
#[path = "faults/dead_peers.rs"]
mod dead_peers;
#[path = "faults/refused.rs"]
mod refused;
#[path = "faults/restart.rs"]
mod restart;
#[path = "faults/rolling.rs"]
mod rolling;
#[path = "faults/storm.rs"]
mod storm;
#[path = "faults/terminated.rs"]
mod terminated;
