//! Keys a reload cannot apply: the listening socket, the runtime, everything about upstream
//! connections and what is injected (server connections and their prepared injection
//! statement outlive a reload), the pooling mode, the admin socket, the metrics' label limit,
//! the log format and the socket options of `[tcp]`. A reload that changes one of them keeps the running value, says so
//! for each key, and applies the rest.

use serde_json::Value;

use crate::config::Config;

/// Dotted keys (or whole sections) whose change needs a restart.
pub const RESTART_KEYS: &[&str] = &[
    "listen.address",
    "listen.worker_threads",
    "listen.reuse_port",
    "upstream",
    "context",
    "pool.mode",
    "admin.address",
    "admin.tenant_label_limit",
    "log.format",
    "tcp",
];

/// Whether `key` (dotted) is, or is inside, one of [`RESTART_KEYS`].
fn needs_restart(key: &str) -> bool {
    RESTART_KEYS.iter().any(|r| key == *r || key.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
}

/// `new` with the running values of the restart-only keys, and the restart-only keys whose
/// value `new` would have changed.
pub fn keep_running(running: &Config, mut new: Config) -> (Config, Vec<String>) {
    let ignored = changed_keys(running, &new).into_iter().filter(|k| needs_restart(k)).collect();
    new.listen.address = running.listen.address;
    new.listen.worker_threads = running.listen.worker_threads;
    new.listen.reuse_port = running.listen.reuse_port;
    new.upstream = running.upstream.clone();
    new.context = running.context.clone();
    new.pool.mode = running.pool.mode;
    new.admin.address = running.admin.address;
    new.admin.tenant_label_limit = running.admin.tenant_label_limit;
    new.log.format = running.log.format;
    new.tcp = running.tcp.clone();
    (new, ignored)
}

/// The dotted keys whose values differ between `a` and `b` (names only: values may be secrets).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) {
        diff(&a, &b, "", &mut out);
    }
    out.sort();
    out
}

fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                diff(av, b.get(key).unwrap_or(&Value::Null), &path, out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_keep_their_running_values_and_are_named() {
        let mut running = Config::default();
        running.upstream.database = Some("app".into());
        let new = Config::from_toml(
            "[listen]\naddress = \"127.0.0.1:7000\"\nworker_threads = 3\nmax_clients = 5\n\
             [upstream]\nhost = \"db\"\ndatabase = \"app\"\n[context]\ntenant_setting = \"app.tenant\"\n\
             [pool]\nmode = \"transaction\"\nsize = 7\n[admin]\naddress = \"127.0.0.1:9000\"\n\
             tenant_label_limit = 3\n[log]\nformat = \"json\"\nfilter = \"debug\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (effective, ignored) = keep_running(&running, new);
        assert_eq!(
            ignored,
            [
                "admin.address",
                "admin.tenant_label_limit",
                "context.tenant_setting",
                "listen.address",
                "listen.worker_threads",
                "log.format",
                "pool.mode",
                "upstream.host"
            ]
        );
        // Nothing that needs a restart differs any more; the reloadable changes remain.
        assert_eq!(changed_keys(&running, &effective), ["listen.max_clients", "log.filter", "pool.size"]);
    }

    #[test]
    fn prefixes_match_whole_key_segments() {
        assert!(needs_restart("upstream.password_file"));
        assert!(needs_restart("pool.mode"));
        assert!(!needs_restart("pool.min_idle"));
        assert!(!needs_restart("listen.address_extra"));
    }
}
