//! Inputs the fuzz targets (`fuzz/`) found, replayed through the same entry points
//! (`rlsproxy::fuzzing`), and every recorded seed (`fuzz/seeds/`), so that what was found
//! stays fixed and the entry points keep accepting real traffic. A failing case panics with
//! the property the target checks.

use std::path::Path;

use rlsproxy::fuzzing;

/// Each seed of `target` through `run`.
fn replay_seeds(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        if let Ok(data) = std::fs::read(entry.path()) {
            run(&data);
        }
    }
}

#[test]
fn every_recorded_seed_passes_its_target() {
    replay_seeds("client_stream", fuzzing::client_stream);
    replay_seeds("server_stream", fuzzing::server_stream);
    replay_seeds("guard_sql", fuzzing::guard_sql);
    replay_seeds("guard_cache", fuzzing::guard_cache);
    replay_seeds("jwt_password", fuzzing::jwt_password);
    replay_seeds("config_toml", fuzzing::config_toml);
}

/// guard_cache: `SELECT setseed(90o5)::text` shared the cache key of `SELECT
/// setseed(0o5)::text` (digit runs collapsed to `0`), so once the valid text was cached the
/// invalid one was passed instead of refused as unparsable. Fails before the key kept digit
/// runs that a letter continues.
#[test]
fn a_prefixed_literal_does_not_lend_its_verdict() {
    fuzzing::guard_cache(b"SELECT setseed(0o5)::text\0\xc7\x78\xb3\x27\x2a");
    let guard = rlsproxy::policy::guard::Guard::from_config(fuzzing::config());
    for (valid, invalid) in
        [("SELECT 0x1F", "SELECT 1x1F"), ("SELECT 0o5", "SELECT 90o5"), ("SELECT 0b1", "SELECT 2b1")]
    {
        assert!(guard.check_sql(valid.as_bytes(), None, false).is_ok(), "{valid}");
        assert!(guard.check_sql(invalid.as_bytes(), None, false).is_err(), "{invalid} after {valid}");
    }
}

/// config_toml: a `log.filter` of a few hundred bytes of nested span-field patterns kept the
/// configuration loader busy for over 15 seconds (tracing-subscriber compiled each field value
/// into a full DFA). Field values are now matched as literal text; the same filter, and one
/// twice as deep, load at once. The loader runs on a thread and the test gives up on it after
/// a minute, so a regression fails here instead of stalling the suite.
#[test]
fn a_nested_log_filter_does_not_stall_the_config_loader() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/findings/config_toml-log-filter-timeout");
    let finding = std::fs::read(path).expect("the recorded finding");
    let text = String::from_utf8(finding).expect("UTF-8");
    let filter = text.lines().find_map(|l| l.strip_prefix("filter = \"")).expect("a filter line");
    let deeper = format!("[log]\nfilter = \"{}{}\n", filter.trim_end_matches('"'), filter);
    let (done, finished) = std::sync::mpsc::channel();
    let loader = std::thread::spawn(move || {
        fuzzing::config_toml(text.as_bytes());
        fuzzing::config_toml(deeper.as_bytes());
        let _ = done.send(());
    });
    let outcome = finished.recv_timeout(std::time::Duration::from_secs(60));
    if outcome.is_err() && loader.is_finished() {
        loader.join().expect("the loader panicked");
    }
    assert!(outcome.is_ok(), "the loader is still parsing after a minute");
}

/// config_toml: two directives for one span field value (`[{a=x}]`) broke an ordering
/// invariant tracing-subscriber asserts, a panic in every debug build, the tests' included
/// (`directive.rs`: "Ordering::Equal must imply a.fields == b.fields"). The fuzzer's input
/// was lost with its machine; the recorded one is the smallest of its kind. Such a filter is
/// refused now, with a message naming both directives. Fails before: the loader panics.
#[test]
fn a_span_field_directive_given_twice_is_refused_not_a_panic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/findings/config_toml-log-filter-panic");
    let finding = std::fs::read(path).expect("the recorded finding");
    fuzzing::config_toml(&finding);
    let text = std::str::from_utf8(&finding).expect("UTF-8");
    let err = rlsproxy::config::Config::from_toml(text).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "log.filter: not a valid filter (`[{a=x}]=info` and `[{a=x}]=debug` set the same target twice; \
             keep one); e.g. \"info\" or \"info,rlsproxy=debug\""
        )
    );
}

/// Found reading tracing-subscriber's parser for the finding above: a directive with white
/// space before a multi-byte character (`info, é=debug`) made it slice a string off a
/// character boundary, a panic in release builds too, at start or at a reload. Each directive
/// is trimmed before it is parsed now, and the filter means what it says.
#[test]
fn white_space_before_a_multi_byte_target_is_not_a_panic() {
    fuzzing::config_toml("[log]\nfilter = \"info, é=debug\"\n".as_bytes());
    let mut config = fuzzing::config().clone();
    config.log.filter = "info, é=debug".into();
    assert!(config.validate().is_ok());
    let filter = rlsproxy::config::parse_log_filter("info, é=debug").map(|f| f.to_string());
    assert_eq!(filter.as_deref(), Ok("é=debug,info"));
}
