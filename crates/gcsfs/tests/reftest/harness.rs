//! Runs an op list against the model and the filesystem side by side and compares: each op's
//! result, the bucket and the conflicts directory after every op, the whole tree (readdir +
//! lookup + read) on `CheckTree` and at the end, after every handle is closed.

use std::collections::BTreeMap;

use gcsfs::fs::InodeNo;

use super::model::{K, Model, Out};
use super::ops::Op;
use super::sut::Sut;

/// Both sides of one test case.
pub struct Harness {
    pub model: Model,
    pub sut: Sut,
    /// The paths of the last `InterruptedRename`, for `RepeatRename`.
    last_interrupted: Option<(super::ops::P, super::ops::P)>,
    /// `--write-back async`: the bucket lags behind closes, so it is compared only after a
    /// `Sync` (and at the end); reads, listings and every op's result are compared as always.
    async_wb: bool,
    /// The bucket at the last `Sync` (or the start): what a crash must not lose.
    synced: BTreeMap<String, Vec<u8>>,
    /// Every state (`None`: absent) the model's bucket gave each key after an op since then.
    since_sync: BTreeMap<String, Vec<Option<Vec<u8>>>>,
}

fn show(out: &Out) -> String {
    match out {
        Ok(d) => format!("Ok({:?})", String::from_utf8_lossy(d)),
        Err(e) => format!("Err({})", std::io::Error::from_raw_os_error(*e)),
    }
}

impl Harness {
    pub fn new(streaming: bool, async_wb: bool, ttl: std::time::Duration) -> Self {
        Self {
            model: Model::new(streaming),
            sut: Sut::new(streaming, async_wb, ttl),
            last_interrupted: None,
            async_wb,
            synced: BTreeMap::new(),
            since_sync: BTreeMap::new(),
        }
    }

    /// The model's side of `op`.
    fn model_apply(model: &mut Model, op: &Op, key: Option<&str>) -> Out {
        match op {
            Op::Create { path, data, then } => model.create(&path.0, &data.0, *then),
            Op::Open { path } => model.open(&path.0),
            Op::Write {
                handle,
                offset,
                data,
            } => model.write(*handle, *offset, &data.0),
            Op::Close { handle } => model.close(*handle),
            Op::Read { path } => model.read(&path.0),
            Op::Truncate { path, size } => model.truncate(&path.0, *size),
            Op::Mkdir { path } => model.mkdir(&path.0),
            Op::Rmdir { path } => model.rmdir(&path.0),
            Op::Unlink { path } => model.unlink(&path.0),
            Op::Rename { from, to } => model.rename(&from.0, &to.0),
            Op::RemotePut { path, marker, data } => model.remote_put(&path.0, *marker, &data.0),
            Op::RemoteDelete { .. } => model.remote_delete(key),
            Op::InterruptedRename {
                from,
                to,
                copied,
                deleted,
            } => model.interrupted_rename(&from.0, &to.0, *copied, *deleted),
            Op::RepeatRename => unreachable!("replaced by a Rename in apply"),
            Op::List { .. } | Op::CheckTree | Op::Forget | Op::Sync | Op::Crash => Ok(Vec::new()),
        }
    }

    /// The filesystem's side of `op`.
    async fn sut_apply(&mut self, op: &Op, key: Option<&str>) -> Result<Out, String> {
        Ok(match op {
            Op::Create { path, data, then } => self.sut.create(&path.0, &data.0, *then).await,
            Op::Open { path } => self.sut.open(&path.0).await,
            Op::Write {
                handle,
                offset,
                data,
            } => self.sut.write(*handle, *offset, &data.0).await,
            Op::Close { handle } => self.sut.close(*handle).await,
            Op::Read { path } => self.sut.read(&path.0).await,
            Op::Truncate { path, size } => self.sut.truncate(&path.0, *size).await,
            Op::Mkdir { path } => self.sut.mkdir(&path.0).await,
            Op::Rmdir { path } => self.sut.rmdir(&path.0).await,
            Op::Unlink { path } => self.sut.unlink(&path.0).await,
            Op::Rename { from, to } => self.sut.rename(&from.0, &to.0).await,
            Op::RemotePut { path, marker, data } => {
                self.sut.remote_put(&path.0, *marker, &data.0).await
            }
            Op::RemoteDelete { .. } => self.sut.remote_delete(key).await,
            Op::InterruptedRename {
                from,
                to,
                copied,
                deleted,
            } => {
                self.sut
                    .interrupted_rename(&from.0, &to.0, *copied, *deleted)
                    .await
            }
            Op::RepeatRename => unreachable!("replaced by a Rename in apply"),
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
                Ok(Vec::new())
            }
            Op::CheckTree => {
                self.check_tree(false).await?;
                Ok(Vec::new())
            }
            Op::Forget => {
                self.sut.forget_all();
                Ok(Vec::new())
            }
            Op::Sync => {
                self.sut.sync().await?;
                Ok(Vec::new())
            }
            Op::Crash => {
                self.check_crash_image()?;
                Ok(Vec::new())
            }
        })
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        let repeated;
        let op = match op {
            Op::InterruptedRename { from, to, .. } => {
                self.last_interrupted = Some((from.clone(), to.clone()));
                op
            }
            Op::RepeatRename => match &self.last_interrupted {
                Some((from, to)) => {
                    repeated = Op::Rename {
                        from: from.clone(),
                        to: to.clone(),
                    };
                    &repeated
                }
                None => return Ok(()),
            },
            _ => op,
        };
        let key = match op {
            Op::RemoteDelete { index } => self.model.remote_delete_key(*index),
            _ => None,
        };
        let s = self.sut_apply(op, key.as_deref()).await?;
        let m = self.model_agrees(&s, |model| Self::model_apply(model, op, key.as_deref()));
        if std::env::var("REFTEST_TRACE").is_ok() {
            eprintln!("TRACE {op:?} -> model {} fs {}", show(&m), show(&s));
        }
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
        self.sut
            .fs
            .check_invariants()
            .map_err(|e| format!("inode table: {e}"))?;
        self.note_model_states();
        if self.async_wb && !matches!(op, Op::Sync) {
            return Ok(());
        }
        self.check_bucket()?;
        if matches!(op, Op::Sync) {
            // What the bucket holds now (checked against the model just above; an open file
            // may be there with a content it had since its last publish) is what was saved.
            self.synced = self.sut.bucket().into_iter().collect();
            self.since_sync.clear();
        }
        Ok(())
    }

    fn model_bucket(&self) -> BTreeMap<String, Vec<u8>> {
        self.model
            .bucket
            .iter()
            .map(|(k, o)| (k.clone(), o.data.clone()))
            .collect()
    }

    /// Records, for every key, the state the model's bucket gives it now, and the content of an
    /// open file that would be uploaded to it (a background upload may take it), if new.
    fn note_model_states(&mut self) {
        for (key, data) in self.model.open_contents() {
            let states = self.since_sync.entry(key).or_default();
            if !states.contains(&Some(data.clone())) {
                states.push(Some(data));
            }
        }
        let now = self.model_bucket();
        let keys: std::collections::BTreeSet<String> = now
            .keys()
            .chain(self.since_sync.keys())
            .chain(self.synced.keys())
            .cloned()
            .collect();
        for key in keys {
            let state = now.get(&key).cloned();
            let states = self.since_sync.entry(key).or_default();
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
    }

    /// What a crash now would leave (the bucket at this instant, background uploads in flight
    /// or not): every key holds what the last `Sync` saved, or a state the model gave it since,
    /// or a content an open file to be uploaded to it had since (a background upload takes
    /// the file as it is). A key the model never changed since the `Sync` thus holds exactly
    /// what was saved: a crash loses at most what was not saved yet.
    fn check_crash_image(&self) -> Result<(), String> {
        let image: BTreeMap<String, Vec<u8>> = self.sut.bucket().into_iter().collect();
        let keys: std::collections::BTreeSet<&String> = image
            .keys()
            .chain(self.synced.keys())
            .chain(self.since_sync.keys())
            .collect();
        for key in keys {
            let have = image.get(key);
            let saved = self.synced.get(key);
            let later = self.since_sync.get(key);
            let allowed = have == saved
                || later.is_some_and(|states| states.iter().any(|s| s.as_ref() == have))
                || have.is_some_and(|d| self.model.had_since_published(key, d));
            if !allowed {
                let show = |d: Option<&Vec<u8>>| {
                    d.map_or("absent".to_string(), |d| {
                        format!("{:?}", String::from_utf8_lossy(d))
                    })
                };
                return Err(format!(
                    "crash image: {key:?} holds {}, saved {} at the last Sync, states since {:?}",
                    show(have),
                    show(saved),
                    later
                        .map(|s| s.iter().map(|d| show(d.as_ref())).collect::<Vec<_>>())
                        .unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// Runs `f` on the model; if the answer differs from the fs's `have`, tries the model's
    /// [`Model::variants`] and keeps the first that agrees. Returns the model's answer.
    fn model_agrees<T: PartialEq>(&mut self, have: &T, f: impl Fn(&mut Model) -> T) -> T {
        let variants = self.model.variants();
        let want = f(&mut self.model);
        if want == *have {
            return want;
        }
        for mut alt in variants {
            let got = f(&mut alt);
            if got == *have {
                alt.held_copy = false;
                self.model = alt;
                return got;
            }
        }
        want
    }

    /// The bucket and the conflicts directory match the model exactly.
    fn check_bucket(&self) -> Result<(), String> {
        let want: Vec<(String, Vec<u8>)> = self
            .model
            .bucket
            .iter()
            .map(|(k, o)| (k.clone(), o.data.clone()))
            .collect();
        let mut have = self.sut.bucket();
        if self.async_wb {
            // A background upload publishes the file as it is when the upload runs: an open
            // file changed after its flush may be in the bucket with some of those changes.
            for (key, data) in &mut have {
                let model = want.iter().find(|(k, _)| k == key).map(|(_, d)| d);
                if let Some(d) = model
                    && d != data
                    && self.model.had_since_published(key, data)
                {
                    data.clone_from(d);
                }
            }
        }
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
            let have = self
                .sut
                .list(ino)
                .await
                .map_err(|e| format!("readdir {dir:?}: errno {e}"))?;
            let want: Vec<(String, K)> =
                self.model_agrees(&have, |m| m.list(&dir).into_iter().collect());
            if want != have {
                return Err(format!("readdir {dir:?}: model {want:?}, fs {have:?}"));
            }
            for (name, _) in have {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let have = self.sut.lookup(ino, &name).await;
                let have_kind = have.map(|(_, k)| k).ok();
                let want = self.model_agrees(&have_kind, |m| m.lookup(&path));
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
                        let have = self.sut.read_ino(child).await;
                        let want = self.model_agrees(&have, |m| m.read_file(&path));
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
        if self.async_wb {
            self.sut.sync().await?;
        }
        self.check_bucket()
    }

    /// Closes every handle (comparing each close), then compares the whole tree and checks that
    /// nothing is left dirty.
    pub async fn finish(&mut self) -> Result<(), String> {
        while !self.model.handles.is_empty() {
            let m = self.model.close(0);
            let s = self.sut.close(0).await;
            if m != s {
                return Err(format!("final close: model {}, fs {}", show(&m), show(&s)));
            }
            if !self.async_wb {
                self.check_bucket()?;
            }
        }
        self.check_tree(true).await?;
        if self.sut.fs.has_dirty() {
            return Err("a file is still dirty after every handle was closed".into());
        }
        Ok(())
    }
}

/// Runs `ops` on a fresh model and filesystem; the error names the first disagreement.
pub async fn run(ops: &[Op], streaming: bool) -> Result<(), String> {
    run_mode(ops, streaming, false, false).await
}

/// Runs `ops` as [`run`] does, with `--write-back async` if `async_wb`, and with metadata and
/// negative caches that never expire if `cached` (for cases without other clients).
pub async fn run_mode(
    ops: &[Op],
    streaming: bool,
    async_wb: bool,
    cached: bool,
) -> Result<(), String> {
    let ttl = if cached {
        std::time::Duration::from_secs(3600)
    } else {
        std::time::Duration::ZERO
    };
    let mut h = Harness::new(streaming, async_wb, ttl);
    for (i, op) in ops.iter().enumerate() {
        h.apply(op)
            .await
            .map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    h.finish().await.map_err(|e| format!("at the end: {e}"))?;
    // Every write-back transition was one its phase expects (a bug in a background task
    // panics there unseen, but is counted).
    match gcsfs::fs::unexpected_events() {
        0 => Ok(()),
        n => Err(format!(
            "{n} write-back events came in a phase not expecting them"
        )),
    }
}
