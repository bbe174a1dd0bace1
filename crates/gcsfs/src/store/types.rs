//! Value types shared by every [`ObjectStore`](super::ObjectStore) implementation.
//!
//! These are the only storage types the layers above `store` ever see: no SDK or HTTP type
//! crosses this boundary.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

use super::StoreError;

/// The full name of an object inside its bucket (GCS calls it the object's `name`).
///
/// Any UTF-8 string GCS accepts is a valid key, including ones that cannot be mapped to a path
/// (`a//b`, `..`); deciding what is a valid *path* is the filesystem's job, not the store's.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Wraps a key. Empty keys are rejected: GCS has no object with an empty name.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        if key.is_empty() {
            return Err(StoreError::new(
                super::ErrorKind::InvalidArgument,
                "object key must not be empty",
            ));
        }
        Ok(Self(key))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the key, returning the owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `ObjectKey` be searched with `&str` (order and equality are the string's).
impl std::borrow::Borrow<str> for ObjectKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// An object's generation: changes every time the object's data is replaced.
///
/// `Generation(0)` is only meaningful as a precondition, where it means "the object must not exist".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Generation(pub i64);

impl Generation {
    /// The precondition value meaning "create only: the object must not exist yet".
    pub const NONE: Generation = Generation(0);
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An object's metageneration: starts at 1 for each generation and grows with each metadata change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Metageneration(pub i64);

impl fmt::Display for Metageneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What GCS knows about one object generation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub generation: Generation,
    pub metageneration: Metageneration,
    /// Last data or metadata change, as reported by GCS (`updated`).
    pub updated: SystemTime,
    /// CRC32C of the data (Castagnoli), if GCS reported one.
    pub crc32c: Option<u32>,
    pub content_type: Option<String>,
    /// User-defined metadata (`metadata` in the JSON API).
    pub metadata: BTreeMap<String, String>,
}

/// Conditions a mutation or read must satisfy, checked by GCS atomically with the operation.
///
/// A request that carries a precondition is idempotent and may be retried; one without may not.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Preconditions {
    /// `ifGenerationMatch`: the live generation must equal this; `Generation::NONE` (0) means the
    /// object must not exist.
    pub if_generation_match: Option<Generation>,
    /// `ifMetagenerationMatch`: the live metageneration must equal this.
    pub if_metageneration_match: Option<Metageneration>,
}

impl Preconditions {
    /// No conditions: the call is not idempotent and is never retried.
    pub const NONE: Preconditions = Preconditions {
        if_generation_match: None,
        if_metageneration_match: None,
    };

    /// Only create the object: fail with `PreconditionFailed` if it exists.
    pub fn create_only() -> Self {
        Self::generation(Generation::NONE)
    }

    /// Require the live generation to be `generation` (0: must not exist).
    pub fn generation(generation: Generation) -> Self {
        Self {
            if_generation_match: Some(generation),
            if_metageneration_match: None,
        }
    }

    /// True when at least one condition is set, which makes the call safe to retry.
    pub fn is_conditional(&self) -> bool {
        self.if_generation_match.is_some() || self.if_metageneration_match.is_some()
    }
}

/// A half-open byte range `[start, end)`; `end: None` reads to the end of the object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    /// The whole object.
    pub const ALL: ByteRange = ByteRange {
        start: 0,
        end: None,
    };

    /// `len` bytes from `start`.
    pub fn segment(start: u64, len: u64) -> Self {
        Self {
            start,
            end: Some(start.saturating_add(len)),
        }
    }

    /// Everything from `start` to the end.
    pub fn from(start: u64) -> Self {
        Self { start, end: None }
    }
}

/// Attributes written together with an object's data.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct WriteAttrs {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A stream of data chunks, as returned by reads and taken by streaming writes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Where the data of a write comes from.
pub enum WriteSource {
    /// Data in memory; replayable, so a conditional write of it can be retried.
    Bytes(Bytes),
    /// A local file read from its start; replayable. `crc32c` is the file's CRC32C when the
    /// caller computed it while staging (saves a second pass over the file).
    File { path: PathBuf, crc32c: Option<u32> },
    /// Chunks produced while the upload runs (a resumable upload of unknown size). Not
    /// replayable: a failed stream write is not retried by the store layer.
    Stream(ByteStream),
}

impl WriteSource {
    /// Whether the source can be read again from the start, which retrying requires.
    pub fn is_replayable(&self) -> bool {
        !matches!(self, WriteSource::Stream(_))
    }

    /// A second handle on the same data for another attempt: `Some` for `Bytes` (a cheap
    /// reference-counted clone) and `File` (same path and CRC), `None` for a `Stream`.
    pub fn try_clone(&self) -> Option<WriteSource> {
        match self {
            WriteSource::Bytes(b) => Some(WriteSource::Bytes(b.clone())),
            WriteSource::File { path, crc32c } => Some(WriteSource::File {
                path: path.clone(),
                crc32c: *crc32c,
            }),
            WriteSource::Stream(_) => None,
        }
    }
}

impl fmt::Debug for WriteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            WriteSource::File { path, crc32c } => f
                .debug_struct("File")
                .field("path", path)
                .field("crc32c", crc32c)
                .finish(),
            WriteSource::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// One page of a listing.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ListPage {
    /// Objects whose key starts with the prefix (and, with a delimiter, has no delimiter after it),
    /// in key order.
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter: the distinct `prefix + segment + delimiter` strings, in order.
    pub prefixes: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// A listing request.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    /// Usually `Some("/")`; `None` lists every object under the prefix, recursively.
    pub delimiter: Option<String>,
    pub page_token: Option<String>,
    /// Upper bound on `objects.len() + prefixes.len()` for this page (GCS caps it at 1000).
    pub max_results: Option<u32>,
    /// Only keys lexicographically `>=` this (GCS `startOffset`).
    pub start_offset: Option<String>,
}

/// A change to user metadata: `Some(v)` sets a key, `None` removes it.
pub type MetadataPatch = BTreeMap<String, Option<String>>;

/// A resumable upload in progress: the object it will create and the service's handle on it
/// (for GCS, the session URI). The handle grants the right to upload, like a signed URL, so
/// `Debug` shows only the key.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadSession {
    key: ObjectKey,
    id: String,
}

impl UploadSession {
    /// A session of `key` known to the service as `id`.
    pub fn new(key: ObjectKey, id: impl Into<String>) -> Self {
        Self { key, id: id.into() }
    }

    /// The object the upload creates.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// The service's handle on the session (never logged).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadSession")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where a resumable upload stands, as the service tells it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UploadStatus {
    /// Not finalized: the service holds the object's first `n` bytes.
    Persisted(u64),
    /// Finalized: the object the upload created.
    Done(ObjectMeta),
}

/// What is known of a whole object when its upload starts; the service checks each fact given
/// when the upload is finalized, and refuses to create an object that does not match.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ObjectFacts {
    /// The object's size in bytes.
    pub size: Option<u64>,
    /// The CRC32C (Castagnoli) of the object's data.
    pub crc32c: Option<u32>,
}

/// The data of one request of a resumable upload.
pub enum ChunkData {
    /// Bytes in memory, sent one buffer after the other (never copied into one).
    Memory(Vec<Bytes>),
    /// `len` bytes of a local file, from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl ChunkData {
    /// How many bytes the request carries.
    pub fn len(&self) -> u64 {
        match self {
            ChunkData::Memory(parts) => parts.iter().map(|p| p.len() as u64).sum(),
            ChunkData::File { len, .. } => *len,
        }
    }

    /// Whether the request carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkData::Memory(parts) => {
                write!(f, "Memory({} bytes in {} buffers)", self.len(), parts.len())
            }
            ChunkData::File { path, offset, len } => f
                .debug_struct("File")
                .field("path", path)
                .field("offset", offset)
                .field("len", len)
                .finish(),
        }
    }
}
