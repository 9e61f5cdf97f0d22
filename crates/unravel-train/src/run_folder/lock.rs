//! One writer per run folder: `run.lock` holds the owner's process id and
//! an exclusive OS lock (flock on Unix, LockFileEx on Windows) for as long
//! as the run lasts. The OS drops the lock when its process dies, however
//! it dies, so a lock file whose lock is free was left by a dead process
//! and is taken over.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::RunFolderError;

pub const LOCK_FILE: &str = "run.lock";

/// The lock of a run folder; dropping it removes the lock file and
/// releases the lock.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
}

impl RunLock {
    /// Locks `dir` (which must exist). `Ok((lock, Some(pid)))` when the
    /// lock file of process `pid`, no longer running, was taken over.
    pub fn acquire(dir: &Path) -> Result<(RunLock, Option<String>), RunFolderError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| RunFolderError::Io {
            path: path.clone(),
            source,
        };
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(RunFolderError::Locked {
                        dir: dir.to_path_buf(),
                        owner: owner(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            // The previous owner removes the file before it unlocks: a lock
            // taken on a file that is no longer at `path` locks nothing.
            if !is_at(&file, &path) {
                continue;
            }
            let previous = owner(&mut file);
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            file.sync_all().map_err(io)?;
            let stale = (!previous.is_empty()).then_some(previous);
            return Ok((RunLock { path, file }, stale));
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no one can lock this file after us.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The process id written in a lock file ("" when there is none).
fn owner(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    text.trim().to_string()
}

#[cfg(unix)]
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_at(_file: &File, path: &Path) -> bool {
    path.exists()
}
