//! Per-chunk compression and the one verification gate for chunk bytes.
//!
//! Chunks are compressed one by one so a client can fetch any chunk (or run of chunks) with an
//! HTTP `Range` request. When zstd does not save at least 3 %, the chunk is stored raw.
//! [`decode_chunk`] is the only way chunk bytes from the network become plain bytes: it bounds
//! the output at the declared size and checks the BLAKE3 id before returning anything.

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::chunk::MAX_CHUNK_SIZE;

/// How a chunk's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// The default zstd level of the build (STACK.md: ~410 MB/s per core per 64 KiB chunk).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Why chunk bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// The declared sizes are out of bounds.
    #[error("chunk {hash}: declared size {len} is out of bounds")]
    BadSize {
        /// Chunk id.
        hash: Hash,
        /// The declared uncompressed length.
        len: u64,
    },
    /// The stored bytes did not decompress to exactly the declared size.
    #[error("chunk {hash}: corrupt compressed data")]
    Corrupt {
        /// Chunk id.
        hash: Hash,
    },
    /// The plain bytes do not hash to the chunk id.
    #[error("chunk {hash}: content does not match its id")]
    HashMismatch {
        /// Chunk id.
        hash: Hash,
    },
}

/// A reusable compressor (one per thread).
pub struct ChunkCompressor {
    inner: zstd::bulk::Compressor<'static>,
}

impl ChunkCompressor {
    /// A compressor at `level`.
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(ChunkCompressor {
            inner: zstd::bulk::Compressor::new(level)?,
        })
    }

    /// Compresses one chunk; returns raw bytes when compression does not save at least 3 %.
    /// CPU-bound.
    pub fn compress(&mut self, data: &[u8]) -> (Codec, Vec<u8>) {
        if data.is_empty() {
            return (Codec::Raw, Vec::new());
        }
        match self.inner.compress(data) {
            Ok(c) if (c.len() as u64) * 100 <= (data.len() as u64) * 97 => (Codec::Zstd, c),
            _ => (Codec::Raw, data.to_vec()),
        }
    }
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Turns stored chunk bytes into plain bytes, refusing anything that is not exactly the chunk
/// `hash` of `len` bytes. Output never exceeds `len`. CPU-bound.
pub fn decode_chunk(
    codec: Codec,
    stored: &[u8],
    len: u32,
    hash: &Hash,
) -> Result<Vec<u8>, ChunkError> {
    let mut scratch = Vec::new();
    decode_chunk_into(codec, stored, len, hash, &mut scratch).map(<[u8]>::to_vec)
}

/// [`decode_chunk`] without a copy per chunk: a raw chunk is verified where it lies in
/// `stored`, a compressed one is decompressed into `scratch` (reused across calls). Returns the
/// verified plain bytes. CPU-bound.
pub fn decode_chunk_into<'a>(
    codec: Codec,
    stored: &'a [u8],
    len: u32,
    hash: &Hash,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], ChunkError> {
    if len > MAX_CHUNK_SIZE {
        return Err(ChunkError::BadSize {
            hash: *hash,
            len: len as u64,
        });
    }
    let plain: &[u8] = match codec {
        Codec::Raw => {
            if stored.len() != len as usize {
                return Err(ChunkError::Corrupt { hash: *hash });
            }
            stored
        }
        Codec::Zstd => {
            let len = len as usize;
            // Grown once to the largest chunk seen; zstd writes into the first `len` bytes only,
            // so the output is bounded by `len` whatever the stored bytes claim.
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            let out = &mut scratch[..len];
            // One decompression context per thread: creating one per chunk showed in profiles.
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    let d = match &mut *slot {
                        Some(d) => d,
                        empty => empty.insert(zstd::bulk::Decompressor::new()?),
                    };
                    d.decompress_to_buffer(stored, out)
                })
                .map_err(|_| ChunkError::Corrupt { hash: *hash })?;
            if n != len {
                return Err(ChunkError::Corrupt { hash: *hash });
            }
            &scratch[..len]
        }
    };
    if Hash::of(plain) != *hash {
        return Err(ChunkError::HashMismatch { hash: *hash });
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_round_trip() {
        let data = b"hummel ".repeat(10_000);
        let mut c = ChunkCompressor::new(3).unwrap();
        let (codec, stored) = c.compress(&data);
        assert_eq!(codec, Codec::Zstd);
        assert!(stored.len() < data.len() / 10);
        let h = Hash::of(&data);
        assert_eq!(
            decode_chunk(codec, &stored, data.len() as u32, &h).unwrap(),
            data
        );
    }

    #[test]
    fn incompressible_is_raw() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut c = ChunkCompressor::new(3).unwrap();
        let (codec, stored) = c.compress(&data);
        if codec == Codec::Raw {
            assert_eq!(stored, data);
        }
        assert_eq!(
            decode_chunk(codec, &stored, data.len() as u32, &Hash::of(&data)).unwrap(),
            data
        );
    }

    #[test]
    fn decode_into_reuses_its_scratch_without_leaking_old_bytes() {
        let mut c = ChunkCompressor::new(3).unwrap();
        let big = b"0123456789abcdef".repeat(8_192);
        let small = b"hummel!".repeat(100);
        let mut scratch = Vec::new();
        for data in [&big[..], &small[..], &big[..]] {
            let (codec, stored) = c.compress(data);
            assert_eq!(codec, Codec::Zstd);
            let got = decode_chunk_into(
                codec,
                &stored,
                data.len() as u32,
                &Hash::of(data),
                &mut scratch,
            )
            .unwrap();
            assert_eq!(got, data);
        }
        // A raw chunk is verified in place.
        let raw = [7u8; 100];
        let got = decode_chunk_into(Codec::Raw, &raw, 100, &Hash::of(&raw), &mut scratch).unwrap();
        assert_eq!(got.as_ptr(), raw.as_ptr());
        // A compressed chunk claiming fewer bytes than it holds is refused, not truncated.
        let (codec, stored) = c.compress(&big);
        let short = big.len() as u32 - 1;
        assert!(
            decode_chunk_into(
                codec,
                &stored,
                short,
                &Hash::of(&big[..short as usize]),
                &mut scratch
            )
            .is_err()
        );
    }

    #[test]
    fn refuses_wrong_bytes_and_bombs() {
        let data = vec![0u8; 1 << 20];
        let mut c = ChunkCompressor::new(3).unwrap();
        let (codec, stored) = c.compress(&data);
        let h = Hash::of(&data);
        // Declared smaller than the frame expands to: refused, output bounded.
        assert_eq!(
            decode_chunk(codec, &stored, 1000, &h),
            Err(ChunkError::Corrupt { hash: h })
        );
        // Right size, wrong id.
        let other = Hash::of(b"other");
        assert_eq!(
            decode_chunk(codec, &stored, data.len() as u32, &other),
            Err(ChunkError::HashMismatch { hash: other })
        );
        // Flipped byte in the frame.
        let mut bad = stored.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(decode_chunk(codec, &bad, data.len() as u32, &h).is_err());
        // Raw with a wrong length.
        assert!(decode_chunk(Codec::Raw, &data[1..], data.len() as u32, &h).is_err());
        assert!(decode_chunk(Codec::Raw, &data, MAX_CHUNK_SIZE + 1, &h).is_err());
    }
}
