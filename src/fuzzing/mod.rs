//! Entry points for the fuzz targets in `fuzz/` and for the regression tests that replay what
//! they found (`tests/fuzz_regressions.rs`). Each one feeds outside bytes to the same code the
//! proxy runs on them, in the order the proxy runs it, and panics only when a property the
//! proxy relies on fails. Not part of the proxy's interface: hidden from the documentation,
//! and nothing in the proxy calls it.

mod client;
mod guard;
mod secrets;
mod server;

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use crate::config::Config;

pub use client::client_stream;
pub use guard::{guard_cache, guard_sql};
pub use secrets::{config_toml, jwt_password};
pub use server::server_stream;

/// The configuration every target runs with: the defaults, an upstream (never connected to), an HS256 key (the test suite's, so
/// that tokens it recorded verify) and no leeway.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let toml = "[upstream]\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"app\"\nuser = \"app_proxy\"\n\
                    password = \"fuzz\"\nsslmode = \"disable\"\n\n[jwt]\nalgorithms = [\"HS256\"]\n\
                    secret = \"rlsproxy-test-secret-0123456789abcdef\"\nleeway_s = 0\n";
        // The text is ours and valid; a failure here is a bug in this module, not an input.
        #[allow(clippy::expect_used)]
        Config::from_toml(toml).expect("fuzzing configuration")
    })
}

/// Runs `future` to completion if it never waits: readers over bytes in memory never do.
fn now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzzing_configuration_is_valid() {
        assert_eq!(super::config().jwt.algorithms, ["HS256"]);
    }
}
