//! Creating one timestamped file in the folder: the only thing `/create` does to the filesystem.
//!
//! Names are `YYYY-MM-DDTHH-MM-SS.nnnnnnnnnZ.txt` (UTC, nanoseconds). Colons are replaced by `-` because
//! `:` is not portable in file names: Windows and SMB shares reject it, macOS Finder shows it as `/`,
//! `scp`/`rsync` read `a:b` as `host:path`, and `gsutil`/`gcloud storage cp` URLs get awkward. The name
//! is still sortable by time. If the name is taken (two calls in the same nanosecond, or a clock step
//! back), the file is created with `create_new` and the next candidate is `…Z-1.txt`, `…Z-2.txt`, …
//! so an existing file is never overwritten.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::CreateError;

/// How many names (`…Z.txt`, `…Z-1.txt`, …) are tried before giving up.
pub const MAX_ATTEMPTS: u32 = 1000;

/// The file name for a file created at `at`; `attempt` 0 has no suffix, `n` adds `-n`.
///
/// Always a plain file name: no separator, never `.` or `..`.
pub fn file_name(at: DateTime<Utc>, attempt: u32) -> String {
    let stamp = at.format("%Y-%m-%dT%H-%M-%S%.9fZ");
    if attempt == 0 {
        format!("{stamp}.txt")
    } else {
        format!("{stamp}-{attempt}.txt")
    }
}

/// What a file created at `at` contains: the RFC 3339 timestamp with nanoseconds and a newline.
pub fn file_contents(at: DateTime<Utc>) -> String {
    let mut text = at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    text.push('\n');
    text
}

/// Creates a new file in `folder` named after `at`, writes [`file_contents`], syncs and closes it.
///
/// Blocking: call it from `spawn_blocking`. Returns the path created (`folder` joined with the name,
/// whether or not `folder` ends with a slash). The file is flushed (`fsync`) and closed with the close
/// error checked before this returns, because a FUSE write-back mount such as gcsfs uploads on
/// flush/close and reports upload failures there. On a failure after the file was created, the path is
/// in the error and the (possibly incomplete) file is left for the operator to inspect.
pub fn create_file(folder: &Path, at: DateTime<Utc>) -> Result<PathBuf, CreateError> {
    let contents = file_contents(at);
    for attempt in 0..MAX_ATTEMPTS {
        let path = folder.join(file_name(at, attempt));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                write_sync_close(file, &path, contents.as_bytes())?;
                return Ok(path);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(CreateError::Open { path, source }),
        }
    }
    Err(CreateError::NoFreeName {
        folder: folder.to_path_buf(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Writes `data`, `fsync`s, then closes the descriptor explicitly so a close error is reported
/// (dropping a `File` ignores it).
fn write_sync_close(mut file: File, path: &Path, data: &[u8]) -> Result<(), CreateError> {
    file.write_all(data).map_err(|source| CreateError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    file.sync_all().map_err(|source| CreateError::Sync {
        path: path.to_path_buf(),
        source,
    })?;
    // On Linux the descriptor is released even when close fails (EINTR included): never retry.
    nix::unistd::close(file).map_err(|errno| CreateError::Close {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Component;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_858_267, 123_456_789).unwrap()
    }

    #[test]
    fn name_has_nanoseconds_and_no_colon() {
        assert_eq!(file_name(at(), 0), "2026-11-28T09-31-07.123456789Z.txt");
        assert_eq!(file_name(at(), 3), "2026-11-28T09-31-07.123456789Z-3.txt");
        assert_eq!(file_contents(at()), "2026-11-28T09:31:07.123456789Z\n");
    }

    #[test]
    fn names_are_plain_file_names() {
        for attempt in [0, 1, MAX_ATTEMPTS - 1] {
            for t in [at(), DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let name = file_name(t, attempt);
                let components: Vec<_> = Path::new(&name).components().collect();
                assert_eq!(components.len(), 1, "{name}");
                assert!(matches!(components[0], Component::Normal(_)), "{name}");
                assert!(!name.contains(['/', '\\', ':', '\0']), "{name}");
            }
        }
    }

    #[test]
    fn same_instant_twice_gets_a_suffix_and_keeps_the_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_file(dir.path(), at()).unwrap();
        let second = create_file(dir.path(), at()).unwrap();
        assert_eq!(first, dir.path().join("2026-11-28T09-31-07.123456789Z.txt"));
        assert_eq!(
            second,
            dir.path().join("2026-11-28T09-31-07.123456789Z-1.txt")
        );
        for p in [&first, &second] {
            assert_eq!(std::fs::read_to_string(p).unwrap(), file_contents(at()));
        }
    }

    #[test]
    fn gives_up_when_every_name_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        for attempt in 0..MAX_ATTEMPTS {
            std::fs::write(dir.path().join(file_name(at(), attempt)), b"mine").unwrap();
        }
        let err = create_file(dir.path(), at()).unwrap_err();
        assert!(
            matches!(err, CreateError::NoFreeName { attempts, .. } if attempts == MAX_ATTEMPTS)
        );
        let untouched = std::fs::read(dir.path().join(file_name(at(), 0))).unwrap();
        assert_eq!(untouched, b"mine");
    }
}
