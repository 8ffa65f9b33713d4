//! Crash recovery: periodic autosaves to a recovery folder, and finding them again.
//!
//! Each running app writes one recovery file named after its process id,
//! `session-<pid>.icseg-recovery`, atomically, every minute while there are unsaved
//! changes and after every propagation. A clean exit deletes it. On start, recovery files
//! whose process is no longer running are offered for restoring.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{SessionFile, SessionFileError};

const SUFFIX: &str = ".icseg-recovery";

/// A folder holding recovery files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryStore {
    dir: PathBuf,
    /// The process id this run's file is named after.
    owner: u32,
}

/// A recovery file left behind by an earlier run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryFile {
    /// Where it is.
    pub path: PathBuf,
    /// When it was last written.
    pub modified: Option<SystemTime>,
}

impl RecoveryStore {
    /// A store in `dir` (created on first write) for this process.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_owner(dir, std::process::id())
    }

    /// A store whose own file is named after process id `owner` (tests use an id that
    /// is not running to play a crashed run).
    pub fn with_owner(dir: impl Into<PathBuf>, owner: u32) -> Self {
        Self {
            dir: dir.into(),
            owner,
        }
    }

    /// The default folder: `$ICSEG_RECOVERY_DIR`, else `$XDG_STATE_HOME/icseg/recovery`,
    /// else `~/.local/state/icseg/recovery` (`%LOCALAPPDATA%\icseg\recovery` on Windows),
    /// else a folder in the temporary directory.
    pub fn default_location() -> Self {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = env("ICSEG_RECOVERY_DIR")
            .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("icseg/recovery")))
            .or_else(|| env("LOCALAPPDATA").map(|d| d.join("icseg").join("recovery")))
            .or_else(|| env("HOME").map(|d| d.join(".local/state/icseg/recovery")))
            .unwrap_or_else(|| std::env::temp_dir().join("icseg-recovery"));
        Self::new(dir)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This process's recovery file.
    pub fn own_path(&self) -> PathBuf {
        self.path_for(self.owner)
    }

    fn path_for(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("session-{pid}{SUFFIX}"))
    }

    /// Writes this process's recovery file atomically.
    pub fn write(&self, file: &SessionFile) -> Result<PathBuf, SessionFileError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SessionFileError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.own_path();
        file.write(&path)?;
        Ok(path)
    }

    /// Deletes this process's recovery file (after a save or a deliberate discard).
    pub fn clear_own(&self) {
        let _ = std::fs::remove_file(self.own_path());
    }

    /// Recovery files whose process is gone, newest first.
    pub fn orphans(&self) -> Vec<RecoveryFile> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<RecoveryFile> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let pid: u32 = name
                    .strip_prefix("session-")?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()?;
                if pid == self.owner || process_alive(pid) {
                    return None;
                }
                Some(RecoveryFile {
                    path: e.path(),
                    modified: e.metadata().and_then(|m| m.modified()).ok(),
                })
            })
            .collect();
        found.sort_by_key(|f| std::cmp::Reverse(f.modified));
        found
    }

    /// Deletes a recovery file the user chose not to restore (or has restored).
    pub fn discard(&self, file: &RecoveryFile) {
        let _ = std::fs::remove_file(&file.path);
    }
}

/// Whether a process with this id runs (Linux: `/proc/<pid>` exists; elsewhere unknown,
/// answered `false` so that recovery is always offered).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && proc.join(pid.to_string()).exists()
}

/// When to autosave: every `interval` while there are unsaved changes.
#[derive(Clone, Debug)]
pub struct AutosaveTimer {
    interval: Duration,
    last_write: Instant,
    saved_revision: u64,
}

impl AutosaveTimer {
    /// A timer that starts counting at `now` with nothing unsaved at `revision`.
    pub fn new(interval: Duration, now: Instant, revision: u64) -> Self {
        Self {
            interval,
            last_write: now,
            saved_revision: revision,
        }
    }

    /// Whether an autosave is due at `now` for a session at `revision`.
    pub fn due(&self, now: Instant, revision: u64) -> bool {
        revision != self.saved_revision && now.duration_since(self.last_write) >= self.interval
    }

    /// Records that the session at `revision` was written at `now`.
    pub fn written(&mut self, now: Instant, revision: u64) {
        self.last_write = now;
        self.saved_revision = revision;
    }

    /// The revision last written.
    pub fn saved_revision(&self) -> u64 {
        self.saved_revision
    }

    /// How long until the next autosave could happen.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.interval
            .saturating_sub(now.duration_since(self.last_write))
    }
}
