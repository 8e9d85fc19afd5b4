//! Packs: the unit that slaves store, replicate, announce and serve (the seed's `[hash].gz`).
//!
//! A pack is an immutable file of stored chunks with a table of contents at its end:
//!
//! ```text
//! header   "HUMLPACK" | u32 LE format version (1) | u32 LE reserved (0)        16 bytes
//! body     stored chunk bytes, back to back (zstd frames or raw)
//! toc      postcard(Vec<PackEntry>)
//! trailer  u64 LE toc offset | u64 LE toc length | "HUMLPTOC"                   24 bytes
//! ```
//!
//! A pack is named by the BLAKE3 of all its bytes, so a slave verifies a whole pack by hashing
//! it, and a client verifies each chunk it reads with a `Range` request by the chunk's own id.
//! Why packs and not one blob per chunk: 100 GB at 64 KiB is 1.6 million chunks, but only
//! ~6,400 packs of 16 MiB to track, replicate and announce.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::{Codec, Hash};

/// First bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"HUMLPACK";
/// Last bytes of every pack.
pub const TOC_MAGIC: &[u8; 8] = b"HUMLPTOC";
/// The pack format this code writes and reads.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Size of the header before the first chunk.
pub const PACK_HEADER_LEN: u64 = 16;
/// Size of the trailer.
pub const PACK_TRAILER_LEN: u64 = 24;
/// A pack is closed once its body reaches this size.
pub const DEFAULT_PACK_TARGET: u64 = 16 << 20;
/// Largest table of contents a reader accepts.
pub const MAX_TOC_LEN: u64 = 64 << 20;

/// Where one chunk sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Chunk id (BLAKE3 of the plain bytes).
    pub hash: Hash,
    /// Offset of the stored bytes in the pack file.
    pub offset: u64,
    /// Stored (compressed) length.
    pub stored_len: u32,
    /// Plain length.
    pub len: u32,
    /// How the bytes are stored.
    pub codec: Codec,
}

/// A pack that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading failed.
    #[error("pack I/O: {0}")]
    Io(#[from] io::Error),
    /// Not a Hummel pack or a damaged one.
    #[error("not a valid pack: {0}")]
    Invalid(&'static str),
    /// Written by a newer Hummel.
    #[error("pack format version {0} is not supported (this build reads {PACK_FORMAT_VERSION})")]
    Version(u32),
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Appends stored chunks to a pack and finishes it with its table of contents.
pub struct PackWriter<W: Write> {
    out: HashingWriter<W>,
    entries: Vec<PackEntry>,
}

/// A finished pack.
#[derive(Debug)]
pub struct FinishedPack<W> {
    /// BLAKE3 of the whole pack: its name.
    pub hash: Hash,
    /// Total bytes.
    pub size: u64,
    /// Its table of contents.
    pub entries: Vec<PackEntry>,
    /// The writer, handed back (to fsync and rename it).
    pub writer: W,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack by writing its header.
    pub fn new(inner: W) -> io::Result<Self> {
        let mut out = HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        out.write_all(PACK_MAGIC)?;
        out.write_all(&PACK_FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(PackWriter {
            out,
            entries: Vec::new(),
        })
    }

    /// Appends one stored chunk; returns where it went.
    pub fn add(
        &mut self,
        hash: Hash,
        codec: Codec,
        stored: &[u8],
        len: u32,
    ) -> io::Result<PackEntry> {
        let entry = PackEntry {
            hash,
            offset: self.out.written,
            stored_len: u32::try_from(stored.len()).map_err(io::Error::other)?,
            len,
            codec,
        };
        self.out.write_all(stored)?;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.written
    }

    /// True when no chunk was added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the table of contents and trailer.
    pub fn finish(mut self) -> io::Result<FinishedPack<W>> {
        let toc_offset = self.out.written;
        let toc = postcard::to_stdvec(&self.entries).map_err(io::Error::other)?;
        self.out.write_all(&toc)?;
        self.out.write_all(&toc_offset.to_le_bytes())?;
        self.out.write_all(&(toc.len() as u64).to_le_bytes())?;
        self.out.write_all(TOC_MAGIC)?;
        self.out.flush()?;
        Ok(FinishedPack {
            hash: self.out.hasher.finalize().into(),
            size: self.out.written,
            entries: self.entries,
            writer: self.out.inner,
        })
    }
}

/// Reads and checks the table of contents of a pack of `size` bytes.
pub fn read_toc<R: Read + Seek>(mut r: R, size: u64) -> Result<Vec<PackEntry>, PackError> {
    if size < PACK_HEADER_LEN + PACK_TRAILER_LEN {
        return Err(PackError::Invalid("too short"));
    }
    let mut header = [0u8; 16];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut header)?;
    if &header[..8] != PACK_MAGIC {
        return Err(PackError::Invalid("bad magic"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != PACK_FORMAT_VERSION {
        return Err(PackError::Version(version));
    }
    let mut trailer = [0u8; 24];
    r.seek(SeekFrom::Start(size - PACK_TRAILER_LEN))?;
    r.read_exact(&mut trailer)?;
    if &trailer[16..] != TOC_MAGIC {
        return Err(PackError::Invalid("bad trailer"));
    }
    let toc_offset = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let toc_len = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    if toc_len > MAX_TOC_LEN
        || toc_offset < PACK_HEADER_LEN
        || toc_offset.checked_add(toc_len) != Some(size - PACK_TRAILER_LEN)
    {
        return Err(PackError::Invalid("bad table of contents bounds"));
    }
    let mut toc = vec![0u8; toc_len as usize];
    r.seek(SeekFrom::Start(toc_offset))?;
    r.read_exact(&mut toc)?;
    let entries: Vec<PackEntry> = postcard::from_bytes(&toc)
        .map_err(|_| PackError::Invalid("undecodable table of contents"))?;
    for e in &entries {
        let end = e.offset.checked_add(e.stored_len as u64);
        if e.offset < PACK_HEADER_LEN || end.is_none_or(|end| end > toc_offset) {
            return Err(PackError::Invalid("chunk outside the pack body"));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ChunkCompressor, decode_chunk};
    use std::io::Cursor;

    #[test]
    fn write_then_read_every_chunk() {
        let mut w = PackWriter::new(Vec::new()).unwrap();
        let mut comp = ChunkCompressor::new(3).unwrap();
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize * 10]).collect();
        for c in &chunks {
            let (codec, stored) = comp.compress(c);
            w.add(Hash::of(c), codec, &stored, c.len() as u32).unwrap();
        }
        let done = w.finish().unwrap();
        assert_eq!(done.hash, Hash::of(&done.writer));
        assert_eq!(done.size, done.writer.len() as u64);
        let toc = read_toc(Cursor::new(&done.writer), done.size).unwrap();
        assert_eq!(toc, done.entries);
        for (e, c) in toc.iter().zip(&chunks) {
            let stored = &done.writer[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
            assert_eq!(&decode_chunk(e.codec, stored, e.len, &e.hash).unwrap(), c);
        }
    }

    #[test]
    fn rejects_garbage_and_future_versions() {
        let done = PackWriter::new(Vec::new()).unwrap().finish().unwrap();
        let mut bytes = done.writer;
        assert!(
            read_toc(Cursor::new(&bytes), bytes.len() as u64)
                .unwrap()
                .is_empty()
        );
        bytes[8] = 9;
        assert!(matches!(
            read_toc(Cursor::new(&bytes), bytes.len() as u64),
            Err(PackError::Version(9))
        ));
        let junk = vec![7u8; 100];
        assert!(read_toc(Cursor::new(&junk), 100).is_err());
    }
}
