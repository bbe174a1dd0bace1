//! [`ReadData`]: the bytes a read answers with, as views of the buffers that hold them.
//!
//! A read of a remote object is answered with slices of the chunks its GET's response arrived
//! in (a `Bytes` per network read), not with a copy of them in one buffer: the FUSE adapter
//! hands the pieces to the kernel in one `writev`. Gathering them into one buffer was 16.6 % of
//! gcsfs's `perf` samples in a 4-reader sequential read (benches/README, §#16).

use bytes::{Bytes, BytesMut};

/// Pieces a reply is sent in at most; a read gathered from more is joined into one buffer.
/// The kernel takes at most 1024 slices in one `writev` (`UIO_MAXIOV`, the FUSE header is one),
/// and a read made of that many pieces has pieces of a few hundred bytes (a response that
/// arrived in tiny reads), cheaper copied once than described one by one. A 1 MiB read of a
/// response read from the socket 16 KiB at a time is 64 pieces.
pub const MAX_PIECES: usize = 256;

/// The bytes of one read, in order: the pieces of the buffers that hold them (at most
/// [`MAX_PIECES`]; none empty). Compare contents with [`ReadData::into_bytes`]: how the
/// bytes are split says nothing about them.
#[derive(Debug, Clone, Default)]
pub struct ReadData {
    pieces: Vec<Bytes>,
}

impl ReadData {
    /// The read made of `pieces`, in order; joined into one buffer if there are more than
    /// [`MAX_PIECES`] of them.
    pub fn from_pieces(pieces: Vec<Bytes>) -> ReadData {
        let mut pieces: Vec<Bytes> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        if pieces.len() > MAX_PIECES {
            pieces = vec![join(&pieces)];
        }
        ReadData { pieces }
    }

    /// The pieces, in order (never empty ones).
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Bytes in the read.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The bytes in one buffer: the piece itself if there is one, else a copy of them all.
    pub fn into_bytes(mut self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces.pop().expect("one piece"),
            _ => join(&self.pieces),
        }
    }
}

impl From<Bytes> for ReadData {
    fn from(bytes: Bytes) -> ReadData {
        ReadData::from_pieces(vec![bytes])
    }
}

impl From<Vec<u8>> for ReadData {
    fn from(bytes: Vec<u8>) -> ReadData {
        Bytes::from(bytes).into()
    }
}

fn join(pieces: &[Bytes]) -> Bytes {
    let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for p in pieces {
        all.extend_from_slice(p);
    }
    all.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_kept_as_views_and_empty_ones_dropped() {
        let a = Bytes::from(vec![1u8; 10]);
        let b = Bytes::from(vec![2u8; 5]);
        let d = ReadData::from_pieces(vec![a.slice(2..), Bytes::new(), b.clone()]);
        assert_eq!(d.pieces().len(), 2);
        assert_eq!(d.pieces()[0].as_ptr(), a[2..].as_ptr(), "a view, no copy");
        assert_eq!(d.pieces()[1].as_ptr(), b.as_ptr());
        assert_eq!(d.len(), 13);
        assert_eq!(
            &d.into_bytes()[..],
            &[&[1u8; 8][..], &[2u8; 5][..]].concat()[..]
        );
        let one = ReadData::from(a.clone());
        assert_eq!(
            one.clone().into_bytes().as_ptr(),
            a.as_ptr(),
            "one piece: no copy"
        );
        assert!(ReadData::from(Bytes::new()).is_empty());
        assert_eq!(ReadData::default().into_bytes(), Bytes::new());
    }

    #[test]
    fn more_than_max_pieces_are_joined_in_order() {
        let pieces: Vec<Bytes> = (0..=MAX_PIECES)
            .map(|i| Bytes::from(vec![i as u8; 3]))
            .collect();
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let d = ReadData::from_pieces(pieces.clone());
        assert_eq!(d.pieces().len(), 1);
        assert_eq!(&d.pieces()[0][..], &want[..]);
        let at_most = ReadData::from_pieces(pieces[..MAX_PIECES].to_vec());
        assert_eq!(
            at_most.pieces().len(),
            MAX_PIECES,
            "at the bound, kept apart"
        );
    }
}
