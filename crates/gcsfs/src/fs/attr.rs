//! File attributes and how POSIX metadata is stored on objects.
//!
//! Mode, owner and mtime live in the custom-metadata keys gcloud itself uses
//! (`goog-reserved-posix-mode` in octal, `goog-reserved-posix-uid`/`-gid` and
//! `goog-reserved-file-mtime` in decimal seconds), so they round-trip with `gcloud storage cp
//! --preserve-posix`. Objects without them get the mount's defaults.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ino::InodeNo;
use crate::store::{Generation, ObjectMeta};

pub const MODE_KEY: &str = "goog-reserved-posix-mode";
pub const UID_KEY: &str = "goog-reserved-posix-uid";
pub const GID_KEY: &str = "goog-reserved-posix-gid";
pub const MTIME_KEY: &str = "goog-reserved-file-mtime";
/// gcsfuse's mtime key: RFC 3339 with nanoseconds, UTC. Written beside [`MTIME_KEY`] (whole
/// seconds, gcloud's) so that sub-second times survive, and read by gcsfuse too.
pub const MTIME_NANOS_KEY: &str = "gcsfuse_mtime";
/// Standard symlink marker (object data is the target), as written by gcloud and gcsfuse ≥ 3.
pub const SYMLINK_KEY: &str = "goog-reserved-file-is-symlink";
/// Legacy gcsfuse symlink: the target lives in this metadata key and the data is empty.
pub const LEGACY_SYMLINK_KEY: &str = "gcsfuse_symlink_target";

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// Attributes as reported to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: InodeNo,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub atime: SystemTime,
    /// Permission bits only (no file type bits).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Hard links: 1 for a file (0 once unlinked while open); for a directory 2 + its
    /// subdirectories when known, else 1 (what `find` takes for "unknown").
    pub nlink: u32,
}

/// Mount-wide defaults for objects without POSIX metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
}

impl Ownership {
    /// What to store as the owner of a new entry made by `caller`: each id only where it
    /// differs from the mount's default (objects without the keys show the defaults).
    pub fn stored_owner(&self, caller: Caller) -> (Option<u32>, Option<u32>) {
        (
            (caller.uid != self.uid).then_some(caller.uid),
            (caller.gid != self.gid).then_some(caller.gid),
        )
    }
}

/// The process a request comes from: new files and directories belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The POSIX view of one object generation (or of a local, not yet uploaded file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The live generation this describes; `None` for directories and local files.
    pub generation: Option<Generation>,
    pub metageneration: Option<crate::store::Metageneration>,
    /// Symlink target when `kind == Symlink` and stored in metadata (legacy form).
    pub legacy_symlink_target: Option<String>,
    /// Whether these are the store's attributes. `false` only for a directory seen as the
    /// prefix of a listing: whether it has a marker, and what mode and owner the marker
    /// holds, is not known. (Its attributes are then the mount's defaults, which a mount that
    /// checks permissions must not hand out: see `Filesystem::answers_for_permissions`.)
    pub known: bool,
}

impl Stat {
    /// A directory with no marker object (an implicit one, or the bucket's root): the mount's
    /// defaults are its attributes.
    pub fn dir(now: SystemTime) -> Self {
        Stat {
            kind: Kind::Dir,
            size: 0,
            mtime: now,
            ctime: now,
            perm: None,
            uid: None,
            gid: None,
            generation: None,
            metageneration: None,
            legacy_symlink_target: None,
            known: true,
        }
    }

    /// A directory seen only as a prefix of a listing (see [`Stat::known`]).
    pub fn listed_dir(now: SystemTime) -> Self {
        Stat {
            known: false,
            ..Stat::dir(now)
        }
    }

    /// A directory whose marker object is `meta`: mode, owner and mtime come from its metadata.
    pub fn from_marker(meta: &ObjectMeta) -> Self {
        Stat {
            kind: Kind::Dir,
            size: 0,
            legacy_symlink_target: None,
            ..Stat::from_object(meta)
        }
    }

    /// A new, empty local file with mode `perm` and owner `uid`/`gid` (`None`: the mount's
    /// defaults).
    pub fn new_file(
        now: SystemTime,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Self {
        Stat {
            kind: Kind::File,
            perm,
            uid,
            gid,
            ..Stat::dir(now)
        }
    }

    /// The POSIX view of an object.
    pub fn from_object(meta: &ObjectMeta) -> Self {
        let md = &meta.metadata;
        let legacy = md.get(LEGACY_SYMLINK_KEY).cloned();
        let is_symlink = legacy.is_some() || md.get(SYMLINK_KEY).is_some_and(|v| v == "true");
        let mtime = stored_mtime(md).unwrap_or(meta.updated);
        Stat {
            kind: if is_symlink {
                Kind::Symlink
            } else {
                Kind::File
            },
            size: meta.size,
            mtime,
            ctime: meta.updated,
            perm: md
                .get(MODE_KEY)
                .and_then(|s| u32::from_str_radix(s, 8).ok())
                .map(|m| (m & 0o7777) as u16),
            uid: md.get(UID_KEY).and_then(|s| s.parse().ok()),
            gid: md.get(GID_KEY).and_then(|s| s.parse().ok()),
            generation: Some(meta.generation),
            metageneration: Some(meta.metageneration),
            legacy_symlink_target: legacy,
            known: true,
        }
    }

    /// Attributes for the kernel, defaults filled in.
    pub fn attr(&self, ino: InodeNo, own: &Ownership) -> Attr {
        let default_perm = match self.kind {
            Kind::Dir => own.dir_mode,
            Kind::File => own.file_mode,
            Kind::Symlink => 0o777,
        };
        Attr {
            ino,
            kind: self.kind,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
            atime: self.mtime,
            perm: self.perm.unwrap_or(default_perm),
            uid: self.uid.unwrap_or(own.uid),
            gid: self.gid.unwrap_or(own.gid),
            nlink: 1,
        }
    }
}

/// The mtime an object's metadata holds: gcloud's whole seconds, refined to the nanosecond by
/// gcsfuse's key when both name the same second (a tool that rewrites only gcloud's key wins).
fn stored_mtime(md: &BTreeMap<String, String>) -> Option<SystemTime> {
    let secs = md
        .get(MTIME_KEY)
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| u64::try_from(secs).ok());
    let nanos = md
        .get(MTIME_NANOS_KEY)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)));
    match (secs, nanos) {
        (Some(s), Some(n)) if n.duration_since(UNIX_EPOCH).ok()?.as_secs() == s => Some(n),
        (Some(s), _) => Some(UNIX_EPOCH + Duration::from_secs(s)),
        (None, n) => n,
    }
}

/// Metadata entries for POSIX attributes explicitly set by the user (mode/uid/gid/mtime).
pub fn posix_metadata(stat: &Stat) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    if let Some(perm) = stat.perm {
        md.insert(MODE_KEY.to_string(), format!("{perm:o}"));
    }
    if let Some(uid) = stat.uid {
        md.insert(UID_KEY.to_string(), uid.to_string());
    }
    if let Some(gid) = stat.gid {
        md.insert(GID_KEY.to_string(), gid.to_string());
    }
    if let Ok(d) = stat.mtime.duration_since(UNIX_EPOCH) {
        md.insert(MTIME_KEY.to_string(), d.as_secs().to_string());
        let utc = chrono::DateTime::<chrono::Utc>::from(stat.mtime);
        md.insert(
            MTIME_NANOS_KEY.to_string(),
            utc.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Metageneration, ObjectKey};

    fn meta(md: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            key: ObjectKey::new("f").unwrap(),
            size: 3,
            generation: Generation(7),
            metageneration: Metageneration(1),
            updated: UNIX_EPOCH + Duration::from_secs(1000),
            crc32c: None,
            content_type: None,
            metadata: md
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const OWN: Ownership = Ownership {
        uid: 1,
        gid: 2,
        file_mode: 0o644,
        dir_mode: 0o755,
    };

    #[test]
    fn defaults_without_metadata() {
        let a = Stat::from_object(&meta(&[])).attr(InodeNo(5), &OWN);
        assert_eq!((a.perm, a.uid, a.gid, a.size), (0o644, 1, 2, 3));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(a.kind, Kind::File);
    }

    #[test]
    fn posix_metadata_round_trip() {
        let m = meta(&[
            (MODE_KEY, "600"),
            (UID_KEY, "1000"),
            (GID_KEY, "100"),
            (MTIME_KEY, "42"),
        ]);
        let st = Stat::from_object(&m);
        let a = st.attr(InodeNo(5), &OWN);
        assert_eq!((a.perm, a.uid, a.gid), (0o600, 1000, 100));
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(42));
        let md = posix_metadata(&st);
        assert_eq!(md.get(MODE_KEY).unwrap(), "600");
        assert_eq!(md.get(MTIME_KEY).unwrap(), "42");
    }

    #[test]
    fn directory_markers_carry_mode_and_owner() {
        let st = Stat::from_marker(&meta(&[(MODE_KEY, "1777"), (UID_KEY, "7")]));
        assert_eq!(st.kind, Kind::Dir);
        assert_eq!(st.size, 0);
        assert!(st.known);
        let a = st.attr(InodeNo(5), &OWN);
        assert_eq!((a.perm, a.uid, a.gid), (0o1777, 7, 2));
        let listed = Stat::listed_dir(UNIX_EPOCH);
        assert!(!listed.known);
        assert_eq!(listed.attr(InodeNo(6), &OWN).perm, 0o755);
        assert_eq!(
            OWN.stored_owner(Caller { uid: 1, gid: 9 }),
            (None, Some(9)),
            "only what differs from the defaults is stored"
        );
    }

    #[test]
    fn mtime_keeps_nanoseconds_and_stays_readable_as_seconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let st = Stat {
            mtime: t,
            ..Stat::new_file(UNIX_EPOCH, None, None, None)
        };
        let md = posix_metadata(&st);
        assert_eq!(md[MTIME_KEY], "1700000000");
        assert_eq!(md[MTIME_NANOS_KEY], "2023-11-14T22:13:20.123456789Z");
        let pairs: Vec<(&str, &str)> = md.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(Stat::from_object(&meta(&pairs)).mtime, t);
        // Only gcloud's key (gcloud, or a rewrite by a tool that keeps only it): whole seconds.
        let secs = Stat::from_object(&meta(&[(MTIME_KEY, "1700000000")])).mtime;
        assert_eq!(secs, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        // The two disagree: gcloud's wins.
        let stale = Stat::from_object(&meta(&[
            (MTIME_KEY, "42"),
            (MTIME_NANOS_KEY, "2023-11-14T22:13:20.123456789Z"),
        ]));
        assert_eq!(stale.mtime, UNIX_EPOCH + Duration::from_secs(42));
    }

    #[test]
    fn symlink_forms() {
        assert_eq!(
            Stat::from_object(&meta(&[(SYMLINK_KEY, "true")])).kind,
            Kind::Symlink
        );
        assert_eq!(
            Stat::from_object(&meta(&[(SYMLINK_KEY, "false")])).kind,
            Kind::File
        );
        let legacy = Stat::from_object(&meta(&[(LEGACY_SYMLINK_KEY, "t")]));
        assert_eq!(legacy.kind, Kind::Symlink);
        assert_eq!(legacy.legacy_symlink_target.as_deref(), Some("t"));
    }

    #[test]
    fn garbage_metadata_falls_back_to_defaults() {
        let a = Stat::from_object(&meta(&[
            (MODE_KEY, "rwx"),
            (UID_KEY, "-"),
            (MTIME_KEY, "x"),
        ]))
        .attr(InodeNo(5), &OWN);
        assert_eq!((a.perm, a.uid), (0o644, 1));
    }
}
