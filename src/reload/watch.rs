//! The file watch (`[reload] watch_interval_s`): polls the configuration file and every file it
//! names by content, because nothing signals the process when Kubernetes swaps a mounted
//! ConfigMap or Secret (an atomic symlink flip, so modification times of the named paths do not
//! reliably change; contents do).
//!
//! A fingerprint is a hash over the configuration text and each named file's bytes (or the
//! kind of error reading it): the reloader records one for exactly what each reload attempt
//! read, and the watch reloads when the files on disk no longer match it. A failed attempt is
//! recorded too, so a broken file is reported once, not at every tick.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

/// What the last reload attempt read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Seen {
    /// The files the configuration named (see `Config::reloadable_files`); those of the last
    /// configuration that parsed when the last attempt did not.
    pub files: Vec<PathBuf>,
    /// [`fingerprint`] of the configuration text and of `files`.
    pub fingerprint: u64,
}

/// The fingerprint of a configuration `text` (or the error reading it) and of the current
/// contents of `files`.
pub(super) fn fingerprint(text: Result<&str, std::io::ErrorKind>, files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    match text {
        Ok(text) => (0u8, text).hash(&mut h),
        Err(kind) => (1u8, kind).hash(&mut h),
    }
    for path in files {
        path.hash(&mut h);
        match std::fs::read(path) {
            Ok(bytes) => (0u8, bytes).hash(&mut h),
            Err(e) => (1u8, e.kind()).hash(&mut h),
        }
    }
    h.finish()
}

/// The fingerprint of the configuration file at `path` and of `files`, as they are on disk now.
pub(super) fn on_disk(path: &Path, files: &[PathBuf]) -> u64 {
    let text = std::fs::read_to_string(path);
    fingerprint(text.as_deref().map_err(std::io::Error::kind), files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_content_change_or_disappearance_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (config, key) = (dir.path().join("c.toml"), dir.path().join("jwks.json"));
        let write = |p: &Path, s: &str| std::fs::write(p, s).unwrap_or_else(|e| panic!("{e}"));
        write(&config, "a");
        write(&key, "k1");
        let files = vec![key.clone()];
        let first = on_disk(&config, &files);
        assert_eq!(first, fingerprint(Ok("a"), &files), "the same bytes give the same fingerprint");
        write(&key, "k2");
        let second = on_disk(&config, &files);
        assert_ne!(first, second);
        write(&config, "b");
        assert_ne!(second, on_disk(&config, &files));
        std::fs::remove_file(&key).unwrap_or_else(|e| panic!("{e}"));
        let gone = on_disk(&config, &files);
        assert_eq!(gone, on_disk(&config, &files), "a missing file is stable");
        assert_ne!(gone, fingerprint(Ok("b"), &[]));
    }
}
