//! `--config.watch-interval`: noticing that `--config.file` changed, so that it is reloaded
//! as SIGHUP reloads it.
//!
//! The file is read every interval and its bytes compared (by SHA-256) with what it held when
//! the running configuration was loaded from it. Content is what matters, and reading it is the
//! one check every way of replacing a file passes through:
//!
//! - Kubernetes updates a ConfigMap volume by an atomic symlink swap: `config.yaml` is a
//!   symlink to `..data/config.yaml`, and the kubelet writes a new timestamped directory,
//!   renames a new `..data_tmp` symlink over `..data` and removes the old directory. Neither
//!   `config.yaml` nor its inode ever changes from the outside; reading it through the symlinks
//!   sees the new bytes.
//! - Editors that save by renaming a new file over the old one, and plain in-place writes.
//! - A swap or a save that leaves the bytes as they were (a kubelet resync, `touch`) is no
//!   change at all: nothing is reloaded and nothing is bought.
//!
//! inotify (the `notify` crate) would not be simpler: a watch on the file follows the inode the
//! kubelet stops using, so one has to watch the directory, match `..data` renames and re-arm,
//! and still fall back to polling where there are no events (NFS, some overlay mounts). The
//! kubelet itself only updates a mounted ConfigMap about once a minute, so a poll every few
//! seconds adds little to that, and reading a few kilobytes that often costs nothing.
//!
//! A change is reloaded once two consecutive reads agree on it: a burst of changes (an editor
//! writing in steps, several quick swaps) is one reload, of where the burst ended, and a file
//! caught half-written is not loaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// What one read of the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The SHA-256 of its bytes.
    Content([u8; 32]),
    /// It could not be read (it is missing halfway through an editor's rename, or not
    /// readable): the kind of error.
    Unreadable(std::io::ErrorKind),
}

impl Seen {
    /// Reads `path` (through any symlinks).
    pub async fn read(path: &Path) -> Seen {
        match tokio::fs::read(path).await {
            Ok(bytes) => Seen::of_bytes(&bytes),
            Err(err) => Seen::Unreadable(err.kind()),
        }
    }

    /// What a read that returned `bytes` found.
    pub fn of_bytes(bytes: &[u8]) -> Seen {
        Seen::Content(Sha256::digest(bytes).into())
    }
}

/// Watches one configuration file; see the module's documentation.
pub struct ConfigWatch {
    path: PathBuf,
    ticker: Interval,
    /// What the file held when the running configuration was last loaded from it (or when a
    /// load of it was last tried: a file that was refused is not tried again until it changes).
    loaded: Seen,
    /// A change the last read found; reloaded if the next read finds the same.
    pending: Option<Seen>,
}

impl ConfigWatch {
    /// Watches `path` every `interval`; `None` when the interval is zero (watching is off).
    /// Reads the file at once: call it before the configuration is loaded, so that a change
    /// between the two is reloaded rather than missed.
    pub async fn start(path: &Path, interval: Duration) -> Option<ConfigWatch> {
        if interval.is_zero() {
            return None;
        }
        let loaded = Seen::read(path).await;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(ConfigWatch {
            path: path.to_path_buf(),
            ticker,
            loaded,
            pending: None,
        })
    }

    /// The file is about to be loaded (a reload, whatever asked for it): what it holds now
    /// is what the running configuration will have been loaded from. Read before the load, so
    /// that a change between the two is reloaded once more rather than missed.
    pub async fn loading(&mut self) {
        self.loaded = Seen::read(&self.path).await;
        self.pending = None;
    }

    /// Resolves when the file has changed and the change has held for one interval. Safe to
    /// cancel (in a `select!`): what it has seen is kept.
    pub async fn changed(&mut self) {
        loop {
            self.ticker.tick().await;
            let seen = Seen::read(&self.path).await;
            if self.observe(seen) {
                return;
            }
        }
    }

    /// Takes one read into account; true when it calls for a reload.
    pub fn observe(&mut self, seen: Seen) -> bool {
        if seen == self.loaded {
            // Changed and changed back (or a swap to the same bytes): nothing to do.
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&seen) {
            self.pending = None;
            self.loaded = seen;
            return true;
        }
        self.pending = Some(seen);
        false
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How often it is read.
    pub fn interval(&self) -> Duration {
        self.ticker.period()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(loaded: &[u8]) -> ConfigWatch {
        let interval = Duration::from_secs(3600);
        ConfigWatch {
            path: PathBuf::from("/nonexistent"),
            ticker: tokio::time::interval_at(Instant::now() + interval, interval),
            loaded: Seen::of_bytes(loaded),
            pending: None,
        }
    }

    #[tokio::test]
    async fn a_change_is_reloaded_once_two_reads_agree_on_it() {
        let mut w = watch(b"a");
        assert!(!w.observe(Seen::of_bytes(b"b")));
        assert!(w.observe(Seen::of_bytes(b"b")));
        // Once reloaded, the same bytes are no change.
        assert!(!w.observe(Seen::of_bytes(b"b")));
        assert!(!w.observe(Seen::of_bytes(b"b")));
    }

    #[tokio::test]
    async fn the_same_bytes_are_no_change() {
        let mut w = watch(b"a");
        for _ in 0..5 {
            assert!(!w.observe(Seen::of_bytes(b"a")));
        }
    }

    #[tokio::test]
    async fn a_burst_is_one_reload_of_where_it_ended() {
        let mut w = watch(b"a");
        assert!(!w.observe(Seen::of_bytes(b"b")));
        assert!(!w.observe(Seen::of_bytes(b"c")));
        assert!(!w.observe(Seen::Unreadable(std::io::ErrorKind::NotFound)));
        assert!(!w.observe(Seen::of_bytes(b"d")));
        assert!(w.observe(Seen::of_bytes(b"d")));
        assert_eq!(w.loaded, Seen::of_bytes(b"d"));
        assert_eq!(w.pending, None);
    }

    #[tokio::test]
    async fn a_change_undone_before_the_second_read_is_no_reload() {
        let mut w = watch(b"a");
        assert!(!w.observe(Seen::of_bytes(b"b")));
        assert!(!w.observe(Seen::of_bytes(b"a")));
        assert!(!w.observe(Seen::of_bytes(b"b")));
        assert!(w.observe(Seen::of_bytes(b"b")));
    }

    #[tokio::test]
    async fn a_file_gone_for_good_is_reloaded_once() {
        // The reload then fails and is reported; it is not tried again until the file changes.
        let mut w = watch(b"a");
        let gone = Seen::Unreadable(std::io::ErrorKind::NotFound);
        assert!(!w.observe(gone.clone()));
        assert!(w.observe(gone.clone()));
        for _ in 0..3 {
            assert!(!w.observe(gone.clone()));
        }
        assert!(!w.observe(Seen::of_bytes(b"a")));
        assert!(w.observe(Seen::of_bytes(b"a")));
    }

    #[tokio::test]
    async fn zero_turns_watching_off() {
        assert!(
            ConfigWatch::start(Path::new("/nonexistent"), Duration::ZERO)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn loading_takes_the_file_as_it_is_and_forgets_a_pending_change() {
        let dir = std::env::temp_dir().join(format!("ace-config-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, "one").unwrap();
        let mut w = ConfigWatch::start(&path, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(w.loaded, Seen::of_bytes(b"one"));
        assert_eq!(w.interval(), Duration::from_secs(3600));
        assert!(!w.observe(Seen::of_bytes(b"two")));
        std::fs::write(&path, "three").unwrap();
        w.loading().await;
        assert_eq!(w.loaded, Seen::of_bytes(b"three"));
        assert_eq!(w.pending, None);
        std::fs::remove_file(&path).unwrap();
        w.loading().await;
        assert_eq!(w.loaded, Seen::Unreadable(std::io::ErrorKind::NotFound));
        std::fs::remove_dir(&dir).unwrap();
    }
}
