//! The FUSE adapter: translates fuser 0.18 callbacks into [`Filesystem`] calls.
//!
//! No callback blocks its FUSE thread on the network: each request that may reach the store is
//! answered from a task on the tokio runtime (fuser 0.18 replies are `Send + 'static`). Requests
//! that only touch memory (`forget`, `opendir`, `releasedir`, `statfs`) answer inline. Every error
//! is logged once, here, at a level fitting its errno.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::Instrument;

use crate::fs::{self, Attr, Entry, FsError, Kind, SetAttr};
use crate::metrics::FuseMetrics;

/// Largest read and write the kernel is asked to send (1 MiB).
pub const MAX_IO: u32 = 1 << 20;
/// `st_blksize` reported for files: a page, as local filesystems (and gcsfuse) report. Buffered
/// readers (stdio, Python) read this much at first; the kernel's read-ahead grows from the
/// first read's size, so a small first read gets its first bytes soonest.
const BLKSIZE: u32 = 4096;

/// Requests answered from tasks at once, at most; past it a FUSE thread waits for one to end
/// before it reads the next request (the kernel then queues them). The kernel's own limit on
/// background requests (256) does not bound foreground ones (lookups, getattrs, opens of many
/// processes).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 4096;

/// The fuser `Filesystem` over our [`fs::Filesystem`].
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<fs::Filesystem>,
    rt: tokio::runtime::Handle,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Where each request's latency and error are recorded (`--prometheus-port`).
    metrics: Option<Arc<FuseMetrics>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<fs::Filesystem>, rt: tokio::runtime::Handle) -> Self {
        Self {
            fs,
            rt,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            metrics: None,
        }
    }

    /// Records every request's latency and error in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<FuseMetrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Records a request answered inline, started at `started`.
    fn record(&self, op: &'static str, started: Instant, errno: Option<i32>) {
        if let Some(m) = &self.metrics {
            m.record(op, started.elapsed(), errno);
        }
    }

    /// Runs `fut` on the runtime and hands its result to `reply`. Called on a FUSE thread
    /// (never inside the runtime): it waits there while [`MAX_REQUESTS_IN_FLIGHT`] are.
    fn spawn<T, F, R>(&self, op: &'static str, ino: u64, fut: F, reply: R)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, FsError>> + Send + 'static,
        R: FnOnce(Result<T, Errno>) + Send + 'static,
    {
        let started = Instant::now();
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => self
                .rt
                .block_on(self.in_flight.clone().acquire_owned())
                .ok(),
        };
        let span = tracing::debug_span!("fuse", op, ino);
        let metrics = self.metrics.clone();
        self.rt.spawn(
            async move {
                let result = fut.await;
                // Recorded before the answer: whoever sees the answer sees it counted.
                if let Some(m) = metrics {
                    m.record(
                        op,
                        started.elapsed(),
                        result.as_ref().err().map(FsError::errno),
                    );
                }
                reply(result.map_err(|e| errno(op, ino, &e)));
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Logs `e` once at a level fitting it and returns its errno.
fn errno(op: &'static str, ino: u64, e: &FsError) -> Errno {
    let code = e.errno();
    if e.is_expected() {
        tracing::debug!(op, ino, error = %e, "request failed");
    } else if code == libc::ESTALE || code == libc::EROFS || code == libc::EMFILE {
        tracing::warn!(op, ino, error = %e, "request failed");
    } else {
        tracing::error!(
            op,
            ino,
            error = crate::logging::error_chain(e),
            "request failed"
        );
    }
    Errno::from_i32(code)
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn name_str(name: &OsStr) -> Result<String, Errno> {
    name.to_str()
        .map(str::to_owned)
        .ok_or(Errno::from_i32(libc::EINVAL))
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The process a request comes from (new entries belong to it).
fn caller(req: &Request) -> fs::Caller {
    fs::Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn ino(i: INodeNo) -> fs::InodeNo {
    fs::InodeNo(i.0)
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES;
        let supported = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(supported) {
            tracing::debug!(?missing, "kernel lacks some FUSE capabilities");
        }
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        // Many reads in flight at once: the kernel's read-ahead (raised on the mount, see
        // `mount::set_read_ahead`) is split into 1 MiB reads, and past the congestion threshold
        // the kernel drops read-ahead rather than queue it.
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(200);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "lookup",
            parent.0,
            async move { fs.lookup(ino(parent), &name).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.fs.forget(ino(i), nlookup);
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.spawn(
            "getattr",
            i.0,
            async move { fs.getattr(ino(i)).await },
            move |r| match r {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            size,
            mode,
            uid,
            gid,
            mtime: mtime.map(time),
            atime: atime.map(time),
            fh: fh.map(|f| f.0),
        };
        let fs = self.fs.clone();
        self.spawn(
            "setattr",
            i.0,
            async move { fs.setattr(ino(i), set).await },
            move |r| match r {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.spawn(
            "readlink",
            i.0,
            async move { fs.readlink(ino(i)).await },
            move |r| match r {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(e),
            },
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.spawn(
            "mkdir",
            parent.0,
            async move { fs.mkdir(ino(parent), &name, mode, caller).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "unlink",
            parent.0,
            async move { fs.unlink(ino(parent), &name).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "rmdir",
            parent.0,
            async move { fs.rmdir(ino(parent), &name).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (name_str(link_name), name_str(target.as_os_str())) {
            (Ok(n), Ok(t)) => (n, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.spawn(
            "symlink",
            parent.0,
            async move { fs.symlink(ino(parent), &name, &target, caller).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "rename",
            parent.0,
            async move {
                fs.rename(ino(parent), &name, ino(newparent), &newname, flags.bits())
                    .await
            },
            move |r| reply_empty(reply, r),
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Objects cannot have two names.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.spawn(
            "open",
            i.0,
            async move { fs.open(ino(i), flags.0).await },
            move |r| match r {
                Ok(o) => {
                    let f = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(o.fh), f)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "read",
            i.0,
            async move { fs.read(fh.0, offset, size).await },
            move |r| match r {
                // The pieces go to the kernel in one writev, not joined first.
                Ok(data) => {
                    let slices: Vec<IoSlice<'_>> =
                        data.pieces().iter().map(|p| IoSlice::new(p)).collect();
                    reply.data_vectored(&slices)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn write(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = data.to_vec();
        self.spawn(
            "write",
            i.0,
            async move { fs.write(fh.0, offset, &data).await },
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "flush",
            i.0,
            async move { fs.flush(fh.0).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn release(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "release",
            i.0,
            async move { fs.release(ino(i), fh.0).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "fsync",
            i.0,
            async move { fs.fsync(fh.0).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let started = Instant::now();
        let result = self.fs.opendir(ino(i));
        self.record(
            "opendir",
            started,
            result.as_ref().err().map(FsError::errno),
        );
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", i.0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "readdir",
            i.0,
            async move { fs.readdir(fh.0, offset).await },
            move |r| match r {
                Ok(entries) => {
                    for e in &entries {
                        if reply.add(INodeNo(e.ino.0), e.offset, file_type(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let ttl = self.fs.config().metadata_ttl;
        self.spawn(
            "readdirplus",
            i.0,
            async move { Ok((fs.readdir(fh.0, offset).await?, fs)) },
            move |r| match r {
                Ok((entries, fs)) => {
                    let mut sent = 0;
                    for e in &entries {
                        let full = match &e.attr {
                            Some(a) => reply.add(
                                INodeNo(e.ino.0),
                                e.offset,
                                &e.name,
                                if e.cacheable { &ttl } else { &Duration::ZERO },
                                &file_attr(a),
                                Generation(0),
                            ),
                            // `.` and `..`: the kernel ignores their attributes.
                            None => reply.add(
                                INodeNo(e.ino.0),
                                e.offset,
                                &e.name,
                                &Duration::ZERO,
                                &dot_attr(e.ino.0),
                                Generation(0),
                            ),
                        };
                        if full {
                            break;
                        }
                        sent += 1;
                    }
                    fs.readdirplus_sent(&entries[..sent]);
                    reply.ok()
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let started = Instant::now();
        let result = self.fs.releasedir(fh.0);
        self.record(
            "releasedir",
            started,
            result.as_ref().err().map(FsError::errno),
        );
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("releasedir", i.0, &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.spawn(
            "create",
            parent.0,
            async move { fs.create(ino(parent), &name, mode, flags, caller).await },
            move |r| match r {
                Ok((e, o)) => reply.created(
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                    FileHandle(o.fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "fsyncdir",
            i.0,
            async move { fs.fsyncdir(ino(i)).await },
            move |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes; ENOSYS makes the kernel stop asking.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Extended attributes are not kept (`cp -a` then carries on without them).
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // A regular file is made as `create` + `release` would; devices, FIFOs and sockets
        // cannot be objects (as mknod(2) on a filesystem that does not support them: EPERM).
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let fs = self.fs.clone();
        self.spawn(
            "mknod",
            parent.0,
            async move { fs.mknod_file(ino(parent), &name, mode, caller).await },
            move |r| reply_entry(reply, r),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "fallocate",
            i.0,
            async move { fs.fallocate(ino(i), fh.0, offset, length, mode).await },
            move |r| reply_empty(reply, r),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The kernel copies by reading and writing instead, and stops asking.
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // SEEK_DATA/SEEK_HOLE: the kernel answers them itself (no holes), and stops asking.
        reply.error(Errno::ENOSYS);
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Not a terminal, nor anything else with ioctls: what a local file answers to, say,
        // the TCGETS every Python `open` sends (fuser's default would log a warning each time).
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (`-o default_permissions`); ENOSYS stops the calls.
        reply.error(Errno::ENOSYS);
    }
}

fn dot_attr(ino: u64) -> FileAttr {
    file_attr(&Attr {
        ino: fs::InodeNo(ino),
        kind: Kind::Dir,
        size: 0,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        atime: SystemTime::UNIX_EPOCH,
        perm: 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
    })
}
