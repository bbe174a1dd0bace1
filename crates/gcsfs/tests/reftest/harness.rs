//! Runs an op list against the model and the filesystem side by side and compares: each op's
//! result, the bucket and the conflicts directory after every op, the whole tree (readdir +
//! lookup + read) on `CheckTree` and at the end, after every handle is closed.

use gcsfs::fs::InodeNo;

use super::model::{K, Model, Out, Quirks};
use super::ops::Op;
use super::sut::Sut;

/// Both sides of one test case.
pub struct Harness {
    pub model: Model,
    pub sut: Sut,
}

fn show(out: &Out) -> String {
    match out {
        Ok(d) => format!("Ok({:?})", String::from_utf8_lossy(d)),
        Err(e) => format!("Err({})", std::io::Error::from_raw_os_error(*e)),
    }
}

impl Harness {
    pub fn new(streaming: bool, quirks: Quirks) -> Self {
        Self {
            model: Model::new(streaming, quirks),
            sut: Sut::new(streaming),
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        let (m, s) = match op {
            Op::Create { path, data, then } => (
                self.model.create(&path.0, &data.0, *then),
                self.sut.create(&path.0, &data.0, *then).await,
            ),
            Op::Open { path } => (self.model.open(&path.0), self.sut.open(&path.0).await),
            Op::Write {
                handle,
                offset,
                data,
            } => (
                self.model.write(*handle, *offset, &data.0),
                self.sut.write(*handle, *offset, &data.0).await,
            ),
            Op::Close { handle } => (self.model.close(*handle), self.sut.close(*handle).await),
            Op::Read { path } => (self.model.read(&path.0), self.sut.read(&path.0).await),
            Op::Truncate { path, size } => (
                self.model.truncate(&path.0, *size),
                self.sut.truncate(&path.0, *size).await,
            ),
            Op::Mkdir { path } => (self.model.mkdir(&path.0), self.sut.mkdir(&path.0).await),
            Op::Rmdir { path } => (self.model.rmdir(&path.0), self.sut.rmdir(&path.0).await),
            Op::Unlink { path } => (self.model.unlink(&path.0), self.sut.unlink(&path.0).await),
            Op::Rename { from, to } => (
                self.model.rename(&from.0, &to.0),
                self.sut.rename(&from.0, &to.0).await,
            ),
            Op::RemotePut { path, marker, data } => (
                self.model.remote_put(&path.0, *marker, &data.0),
                self.sut.remote_put(&path.0, *marker, &data.0).await,
            ),
            Op::RemoteDelete { index } => {
                let key = self.model.remote_delete_key(*index);
                (
                    self.model.remote_delete(key.as_deref()),
                    self.sut.remote_delete(key.as_deref()).await,
                )
            }
            Op::List { path } => {
                let (parts, _) = super::model::split(&path.0);
                let want = match self.model.resolve_dir(&parts) {
                    Ok(dir) => Ok(self.model.list(&dir).into_iter().collect::<Vec<_>>()),
                    Err(e) => Err(e),
                };
                let have = self.sut.list_path(&parts).await;
                if want != have {
                    return Err(format!("readdir {parts:?}: model {want:?}, fs {have:?}"));
                }
                (Ok(Vec::new()), Ok(Vec::new()))
            }
            Op::CheckTree => {
                self.check_tree(false).await?;
                (Ok(Vec::new()), Ok(Vec::new()))
            }
            Op::Forget => {
                self.sut.forget_all();
                (Ok(Vec::new()), Ok(Vec::new()))
            }
        };
        if m != s {
            return Err(format!("result: model {}, fs {}", show(&m), show(&s)));
        }
        if self.model.handles.len() != self.sut.handles.len() {
            return Err(format!(
                "open handles: model {}, fs {}",
                self.model.handles.len(),
                self.sut.handles.len()
            ));
        }
        self.check_bucket()
    }

    /// The bucket and the conflicts directory match the model exactly.
    fn check_bucket(&self) -> Result<(), String> {
        let want: Vec<(String, Vec<u8>)> = self
            .model
            .bucket
            .iter()
            .map(|(k, o)| (k.clone(), o.data.clone()))
            .collect();
        let have = self.sut.bucket();
        if want != have {
            let fmt = |v: &[(String, Vec<u8>)]| {
                v.iter()
                    .map(|(k, d)| format!("{k:?}={:?}", String::from_utf8_lossy(d)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Err(format!(
                "bucket:\n  model [{}]\n  fs    [{}]",
                fmt(&want),
                fmt(&have)
            ));
        }
        let mut want = self.model.conflicts.clone();
        want.sort();
        let have = self.sut.conflicts();
        if want != have {
            return Err(format!(
                "conflicts dir: model {want:?}, fs {have:?} (data lost or invented)"
            ));
        }
        Ok(())
    }

    /// Walks the tree from the root through readdir and lookup, reading every file (when
    /// `all_closed`; otherwise files someone has open are not read, as a read's close would
    /// publish them).
    pub async fn check_tree(&mut self, all_closed: bool) -> Result<(), String> {
        let mut stack = vec![(String::new(), InodeNo::ROOT)];
        while let Some((dir, ino)) = stack.pop() {
            let want: Vec<(String, K)> = self.model.list(&dir).into_iter().collect();
            let have = self
                .sut
                .list(ino)
                .await
                .map_err(|e| format!("readdir {dir:?}: errno {e}"))?;
            if want != have {
                return Err(format!(
                    "readdir {dir:?}: model {want:?}, fs {have:?}"
                ));
            }
            for (name, _) in have {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let want = self.model.lookup(&path);
                let have = self.sut.lookup(ino, &name).await;
                let kind = match (want, have) {
                    (Some(w), Ok((_, h))) if w == h => w,
                    (w, h) => {
                        return Err(format!("lookup {path:?}: model {w:?}, fs {h:?}"));
                    }
                };
                let child = have.expect("matched").0;
                match kind {
                    K::Dir => stack.push((path, child)),
                    K::File => {
                        if !all_closed && self.model.bound(&path).is_some() {
                            continue;
                        }
                        let want = self.model.read_file(&path);
                        let have = self.sut.read_ino(child).await;
                        if want != have {
                            return Err(format!(
                                "read {path:?}: model {}, fs {}",
                                show(&want),
                                show(&have)
                            ));
                        }
                    }
                }
            }
        }
        self.sut.forget_all();
        self.check_bucket()
    }

    /// Closes every handle (comparing each close), then compares the whole tree and checks that
    /// nothing is left dirty.
    pub async fn finish(&mut self) -> Result<(), String> {
        while !self.model.handles.is_empty() {
            let m = self.model.close(0);
            let s = self.sut.close(0).await;
            if m != s {
                return Err(format!(
                    "final close: model {}, fs {}",
                    show(&m),
                    show(&s)
                ));
            }
            self.check_bucket()?;
        }
        self.check_tree(true).await?;
        if self.sut.fs.has_dirty() {
            return Err("a file is still dirty after every handle was closed".into());
        }
        Ok(())
    }
}

/// Runs `ops` on a fresh model and filesystem; the error names the first disagreement.
pub async fn run(ops: &[Op], streaming: bool, quirks: Quirks) -> Result<(), String> {
    let mut h = Harness::new(streaming, quirks);
    for (i, op) in ops.iter().enumerate() {
        h.apply(op)
            .await
            .map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    h.finish().await.map_err(|e| format!("at the end: {e}"))
}
