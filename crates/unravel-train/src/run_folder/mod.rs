//! A run's folder, written by one trainer at a time, in which a checkpoint
//! is always whole:
//!
//! ```text
//! DIR/run.lock                          the writer's pid, OS-locked (lock.rs)
//! DIR/checkpoints/latest                name of the committed generation
//! DIR/checkpoints/000007/model.safetensors
//! DIR/checkpoints/000007/optimizer.safetensors
//! DIR/metrics.jsonl, DIR/curves.png
//! ```
//!
//! The model and the optimizer state of one moment are one generation: both
//! are written into a hidden folder, which is renamed to its number, and
//! then `latest` is switched to it with one atomic rename. Until that
//! switch the previous generation stays the committed one, so a kill or a
//! full disk at any point leaves a complete pair. What a killed save left
//! behind is removed when the folder is next opened.

mod lock;

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use lock::{RunLock, LOCK_FILE};

use crate::checkpoint::write_atomic;

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const LATEST_FILE: &str = "latest";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVES_FILE: &str = "curves.png";
/// The model file of folders written before generations existed; still
/// read by evaluation and the analyses.
pub const LEGACY_MODEL_FILE: &str = "checkpoint.safetensors";
const LEGACY_OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Debug, Error)]
pub enum RunFolderError {
    #[error("{} already holds a run", dir.display())]
    HoldsARun { dir: PathBuf },
    #[error(
        "{} is in use by {} (its lock is {})",
        dir.display(),
        if owner.is_empty() { "another process".to_string() } else { format!("process {owner}") },
        dir.join(LOCK_FILE).display()
    )]
    Locked { dir: PathBuf, owner: String },
    #[error("{} cannot be written", dir.display())]
    NotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no checkpoint: give a run folder written by the trainer", dir.display())]
    NoCheckpoint { dir: PathBuf },
    #[error("{}: {message}", path.display())]
    BadLatest { path: PathBuf, message: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing `latest` failed (the error names the file).
    #[error(transparent)]
    Pointer(#[from] crate::checkpoint::CheckpointError),
    /// A fault hook stopped a save as a kill would (tests only).
    #[error("the save was stopped at {0:?} by a fault hook")]
    Killed(SavePoint),
}

type Result<T> = std::result::Result<T, RunFolderError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunFolderError + '_ {
    move |source| RunFolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a run treats its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A new run: the folder must not hold one.
    New,
    /// A new run that replaces the run in the folder.
    Overwrite,
    /// Continue the run in the folder from its committed generation.
    Resume,
}

/// Points of a save at which a fault hook is asked (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavePoint {
    /// A file of the new generation is written and synced.
    FileWritten(&'static str),
    /// The new generation's folder has its final name.
    GenerationRenamed,
    /// `latest` names the new generation.
    LatestSwitched,
}

/// What a fault hook does to a save.
#[derive(Debug)]
pub enum Fault {
    /// Stop where the save is, with no clean-up, as `kill -9` would.
    Kill,
    /// Fail as the operating system would (e.g. a full disk).
    Fail(std::io::Error),
}

/// Asked at every [`SavePoint`] of every save; `Err` injects a fault.
pub type FaultHook<'a> = &'a dyn Fn(SavePoint) -> std::result::Result<(), Fault>;

/// One committed checkpoint: a model and the optimizer state that goes
/// with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    pub dir: PathBuf,
}

impl Generation {
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join(OPTIMIZER_FILE)
    }
}

fn generation_name(number: u64) -> String {
    format!("{number:06}")
}

/// The committed generation of the run in `dir`, if there is one.
pub fn latest_generation(dir: &Path) -> Result<Option<Generation>> {
    let checkpoints = dir.join(CHECKPOINTS_DIR);
    let path = checkpoints.join(LATEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let name = text.trim();
    let number: u64 = name.parse().map_err(|_| RunFolderError::BadLatest {
        path: path.clone(),
        message: format!("{name:?} is not a generation number"),
    })?;
    let generation = Generation {
        number,
        dir: checkpoints.join(generation_name(number)),
    };
    if !generation.dir.is_dir() {
        return Err(RunFolderError::BadLatest {
            path,
            message: format!("names {}, which is missing", generation.dir.display()),
        });
    }
    Ok(Some(generation))
}

/// The model file to evaluate or analyse in the run folder `dir`: the
/// committed generation's, or the single file of an older folder.
pub fn latest_model(dir: &Path) -> Result<PathBuf> {
    if let Some(g) = latest_generation(dir)? {
        return Ok(g.model());
    }
    let legacy = dir.join(LEGACY_MODEL_FILE);
    if legacy.is_file() {
        return Ok(legacy);
    }
    Err(RunFolderError::NoCheckpoint {
        dir: dir.to_path_buf(),
    })
}

/// Whether `dir` holds (part of) a run that a new run would destroy.
fn holds_run(dir: &Path) -> bool {
    [
        dir.join(CHECKPOINTS_DIR).join(LATEST_FILE),
        dir.join(METRICS_FILE),
        dir.join(LEGACY_MODEL_FILE),
    ]
    .iter()
    .any(|p| p.exists())
}

/// A run folder held for writing.
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    latest: Cell<Option<u64>>,
    _lock: RunLock,
}

impl RunFolder {
    /// Creates (if need be), checks and locks `dir`. The notes say what
    /// was found and repaired (a stale lock, the remains of a killed save).
    pub fn open(dir: &Path, opening: Opening) -> Result<(RunFolder, Vec<String>)> {
        let not_writable = |source| RunFolderError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        };
        if opening == Opening::Resume && !dir.is_dir() {
            return Err(RunFolderError::NoCheckpoint {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(not_writable)?;
        probe_writable(dir).map_err(not_writable)?;
        let (lock, stale) = RunLock::acquire(dir)?;
        let mut notes = Vec::new();
        if let Some(pid) = stale {
            notes.push(format!(
                "{} was left by process {pid}, which is no longer running; taking it over",
                dir.join(LOCK_FILE).display()
            ));
        }
        match opening {
            Opening::New if holds_run(dir) => {
                return Err(RunFolderError::HoldsARun {
                    dir: dir.to_path_buf(),
                })
            }
            Opening::Overwrite => clear_run(dir)?,
            _ => {}
        }
        let latest = latest_generation(dir)?;
        if opening == Opening::Resume && latest.is_none() {
            return Err(RunFolderError::NoCheckpoint {
                dir: dir.to_path_buf(),
            });
        }
        notes.extend(remove_uncommitted(dir, latest.as_ref().map(|g| g.number))?);
        let folder = RunFolder {
            dir: dir.to_path_buf(),
            latest: Cell::new(latest.map(|g| g.number)),
            _lock: lock,
        };
        Ok((folder, notes))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn latest(&self) -> Option<Generation> {
        self.latest.get().map(|n| self.generation(n))
    }

    /// The number the next [`commit`](Self::commit) will have.
    pub fn next_generation(&self) -> u64 {
        self.latest.get().map_or(1, |n| n + 1)
    }

    fn generation(&self, number: u64) -> Generation {
        Generation {
            number,
            dir: self.dir.join(CHECKPOINTS_DIR).join(generation_name(number)),
        }
    }

    /// Writes `files` as generation [`next_generation`](Self::next_generation)
    /// and makes it the committed one; the previous one is removed after.
    pub fn commit(
        &self,
        files: &[(&'static str, Vec<u8>)],
        fault: Option<FaultHook>,
    ) -> Result<Generation> {
        let inject = |point: SavePoint| -> Result<()> {
            match fault.map(|f| f(point)) {
                Some(Err(Fault::Kill)) => Err(RunFolderError::Killed(point)),
                Some(Err(Fault::Fail(e))) => Err(RunFolderError::Io {
                    path: self.dir.join(CHECKPOINTS_DIR),
                    source: e,
                }),
                _ => Ok(()),
            }
        };
        let checkpoints = self.dir.join(CHECKPOINTS_DIR);
        std::fs::create_dir_all(&checkpoints).map_err(io(&checkpoints))?;
        let next = self.generation(self.next_generation());
        let staging = checkpoints.join(format!(
            ".{}.tmp-{}",
            generation_name(next.number),
            std::process::id()
        ));
        let staged = (|| {
            if staging.exists() {
                std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
            }
            std::fs::create_dir(&staging).map_err(io(&staging))?;
            for (name, bytes) in files {
                let path = staging.join(name);
                let mut file = std::fs::File::create(&path).map_err(io(&path))?;
                file.write_all(bytes).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                inject(SavePoint::FileWritten(name))?;
            }
            sync_dir(&staging);
            if next.dir.exists() {
                std::fs::remove_dir_all(&next.dir).map_err(io(&next.dir))?;
            }
            std::fs::rename(&staging, &next.dir).map_err(io(&next.dir))?;
            sync_dir(&checkpoints);
            Ok(())
        })();
        match staged {
            Err(RunFolderError::Killed(p)) => return Err(RunFolderError::Killed(p)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            Ok(()) => {}
        }
        inject(SavePoint::GenerationRenamed)?;
        let latest = checkpoints.join(LATEST_FILE);
        write_atomic(
            &latest,
            format!("{}\n", generation_name(next.number)).as_bytes(),
        )?;
        let previous = self.latest.replace(Some(next.number));
        inject(SavePoint::LatestSwitched)?;
        if let Some(p) = previous {
            let _ = std::fs::remove_dir_all(self.generation(p).dir);
        }
        Ok(next)
    }
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::File::create(&probe)?.write_all(b"probe")?;
    std::fs::remove_file(&probe)
}

fn sync_dir(dir: &Path) {
    // Makes a rename inside `dir` durable; not every platform can open a
    // folder, and there the rename is as durable as the platform makes it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes the run in `dir` (checkpoints, metrics, curves) and nothing else.
fn clear_run(dir: &Path) -> Result<()> {
    let checkpoints = dir.join(CHECKPOINTS_DIR);
    if checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints).map_err(io(&checkpoints))?;
    }
    for name in [
        METRICS_FILE,
        CURVES_FILE,
        LEGACY_MODEL_FILE,
        LEGACY_OPTIMIZER_FILE,
    ] {
        let path = dir.join(name);
        if path.is_file() {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Removes what killed saves left: staging folders and temporary files,
/// and generations other than the committed one (a newer one was never
/// committed; an older one was about to be removed).
fn remove_uncommitted(dir: &Path, committed: Option<u64>) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let is_temporary = |name: &str| name.starts_with('.') && name.contains(".tmp-");
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temporary(&name) && entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let checkpoints = dir.join(CHECKPOINTS_DIR);
    let Ok(entries) = std::fs::read_dir(&checkpoints) else {
        return Ok(notes);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let stale_generation = name
            .parse::<u64>()
            .is_ok_and(|n| Some(n) != committed && path.is_dir());
        if is_temporary(&name) || stale_generation {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
            if is_temporary(&name) || name.parse::<u64>().ok() > committed {
                notes.push(format!(
                    "removed {}, left unfinished by a save that was interrupted",
                    path.display()
                ));
            }
        }
    }
    Ok(notes)
}
