//! Content-defined chunking: FastCDC 2020 with normalisation level 1.
//!
//! A cut point depends only on the bytes around it, so an edit in the middle of a file changes
//! the chunks near the edit and leaves the others (and their ids) as they were. Chunk ids are the
//! BLAKE3 of the uncompressed chunk. The parameters travel in every [`crate::Index`] so that they
//! can change later without breaking clients.

use std::io::Read;

use fastcdc::v2020::{Normalization, select_masks};
use serde::{Deserialize, Serialize};

use crate::Hash;

/// Largest chunk any index may declare; decoders refuse more.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

/// FastCDC parameters, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    /// No chunk is smaller, except the last one of a file.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// No chunk is larger.
    pub max: u32,
}

impl Default for ChunkerConfig {
    /// 16 / 64 / 256 KiB, the casync/desync defaults.
    fn default() -> Self {
        ChunkerConfig {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

/// The parameters are outside what FastCDC supports or what Hummel accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chunker parameters min={min} avg={avg} max={max}")]
pub struct InvalidChunkerConfig {
    /// Minimum chunk size.
    pub min: u32,
    /// Average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

impl ChunkerConfig {
    /// Checks `64 <= min <= avg <= max <= MAX_CHUNK_SIZE`, that all three are even, and
    /// FastCDC's own bounds. FastCDC scans for cut points two bytes at a time: an odd size
    /// shifts its boundaries by a byte (and trips its debug assertions, a panic), so a
    /// chunker named by an index from the network must not have one.
    pub fn validate(&self) -> Result<(), InvalidChunkerConfig> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = [min, avg, max].iter().all(|v| v % 2 == 0)
            && (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && max >= MAXIMUM_MIN
            && min <= avg
            && avg <= max
            && self.max <= MAX_CHUNK_SIZE;
        if ok {
            Ok(())
        } else {
            Err(InvalidChunkerConfig {
                min: self.min,
                avg: self.avg,
                max: self.max,
            })
        }
    }
}

/// FastCDC's cut-point search for one [`ChunkerConfig`], over bytes the caller holds: the
/// building block of [`chunk_stream`], and of readers that keep chunks where they were read
/// (the push reads files straight into its windows and cuts them there, copying nothing).
#[derive(Clone, Copy, Debug)]
pub struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    /// The cutter for `config` (which [`ChunkerConfig::validate`] accepts).
    pub fn new(config: &ChunkerConfig) -> Cutter {
        let (mask_s, mask_l) = select_masks(config.avg as usize, Normalization::Level1);
        Cutter {
            min: config.min as usize,
            avg: config.avg as usize,
            max: config.max as usize,
            mask_s,
            mask_l,
        }
    }

    /// The largest chunk: a cut is decided once this many bytes follow the chunk's start (or
    /// the stream ends before).
    pub fn max(&self) -> usize {
        self.max
    }

    /// The length of the chunk that starts `data`, or `None` when it is not decided yet:
    /// `data` is the stream from a chunk boundary on, and `last` says it holds the rest of
    /// the stream. Decided when `data` holds [`Cutter::max`] bytes or the rest of the stream;
    /// the chunk then has at least one byte (unless `data` is empty and `last`: `None`).
    pub fn cut(&self, data: &[u8], last: bool) -> Option<usize> {
        if data.is_empty() || (data.len() < self.max && !last) {
            return None;
        }
        let window = &data[..data.len().min(self.max)];
        let (_, len) = fastcdc::v2020::cut(
            window,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        Some(len.clamp(1, window.len()))
    }
}

/// One chunk as it comes out of [`chunk_stream`].
#[derive(Debug)]
pub struct ChunkData<'a> {
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// BLAKE3 of `data`.
    pub hash: Hash,
    /// The uncompressed bytes.
    pub data: &'a [u8],
}

/// What [`chunk_stream`] learned about the whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDigest {
    /// BLAKE3 of all bytes (the file hash).
    pub hash: Hash,
    /// Number of bytes read.
    pub size: u64,
}

/// Bytes [`chunk_stream`] reads at once from a large stream (its buffer also holds the
/// undecided tail, less than the largest chunk): large reads, and the tail moved to the front
/// once per read, not once per chunk.
const STREAM_READ: usize = 4 << 20;
/// [`chunk_stream`]'s first buffer; it doubles while the stream fills it, up to the largest
/// chunk plus `STREAM_READ`. A small file costs a small buffer (a tree of many small files
/// allocates and zeroes one per file).
const STREAM_FIRST_BUFFER: usize = 64 << 10;

/// Cuts `reader` into content-defined chunks, hashes each, and hashes the whole stream in the
/// same pass. `on_chunk` sees the chunks in order, borrowed from one read buffer (nothing is
/// copied per chunk); an error from it stops the stream. An empty stream has no chunks.
/// CPU-bound; call from a blocking context.
pub fn chunk_stream<R, E, F>(
    config: &ChunkerConfig,
    mut reader: R,
    mut on_chunk: F,
) -> Result<StreamDigest, E>
where
    R: Read,
    E: From<std::io::Error>,
    F: FnMut(ChunkData<'_>) -> Result<(), E>,
{
    let cutter = Cutter::new(config);
    let mut file_hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let largest_buffer = cutter.max() + STREAM_READ;
    let mut buf = vec![0u8; STREAM_FIRST_BUFFER.min(largest_buffer)];
    // buf[start..filled] is read and not yet cut.
    let (mut start, mut filled, mut last) = (0usize, 0usize, false);
    loop {
        while let Some(len) = cutter.cut(&buf[start..filled], last) {
            let data = &buf[start..start + len];
            file_hasher.update(data);
            on_chunk(ChunkData {
                offset: size,
                hash: Hash::of(data),
                data,
            })?;
            size += len as u64;
            start += len;
        }
        if last {
            break;
        }
        // Less than a chunk's worth is left: to the front, and read more behind it, in a
        // larger buffer when the stream filled this one.
        let outgrown = filled == buf.len() && buf.len() < largest_buffer;
        buf.copy_within(start..filled, 0);
        filled -= start;
        start = 0;
        if outgrown {
            buf.resize((buf.len() * 2).min(largest_buffer), 0);
        }
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    last = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(E::from(e)),
            }
            if filled - start >= cutter.max() {
                break;
            }
        }
    }
    Ok(StreamDigest {
        hash: file_hasher.finalize().into(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn chunks_of(data: &[u8], cfg: &ChunkerConfig) -> Vec<(u64, usize, Hash)> {
        let mut out = Vec::new();
        let digest = chunk_stream::<_, std::io::Error, _>(cfg, data, |c| {
            out.push((c.offset, c.data.len(), c.hash));
            Ok(())
        })
        .unwrap();
        assert_eq!(digest.size, data.len() as u64);
        assert_eq!(digest.hash, Hash::of(data));
        out
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(chunks_of(&[], &ChunkerConfig::default()).is_empty());
    }

    #[test]
    fn small_file_is_one_chunk() {
        let data = random(10_000, 1);
        let c = chunks_of(&data, &ChunkerConfig::default());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].2, Hash::of(&data));
    }

    #[test]
    fn chunks_cover_the_stream_within_bounds() {
        let cfg = ChunkerConfig::default();
        let data = random(3 << 20, 2);
        let c = chunks_of(&data, &cfg);
        let mut pos = 0u64;
        for (i, (off, len, _)) in c.iter().enumerate() {
            assert_eq!(*off, pos);
            assert!(*len <= cfg.max as usize);
            if i + 1 < c.len() {
                assert!(*len >= cfg.min as usize);
            }
            pos += *len as u64;
        }
        assert_eq!(pos, data.len() as u64);
        let avg = data.len() / c.len();
        assert!(avg > 32 << 10 && avg < 160 << 10, "mean chunk {avg}");
    }

    #[test]
    fn insert_in_the_middle_changes_only_nearby_chunks() {
        let cfg = ChunkerConfig::default();
        let data = random(8 << 20, 3);
        let mut edited = data.clone();
        let at = 4 << 20;
        edited.splice(at..at, random(1024, 4));
        let a: std::collections::HashSet<Hash> =
            chunks_of(&data, &cfg).into_iter().map(|c| c.2).collect();
        let b = chunks_of(&edited, &cfg);
        let new: Vec<_> = b.iter().filter(|c| !a.contains(&c.2)).collect();
        assert!(!new.is_empty());
        assert!(
            new.len() <= 3,
            "{} new chunks after a 1 KiB insert",
            new.len()
        );
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(ChunkerConfig::default().validate().is_ok());
        let bad = ChunkerConfig {
            min: 100_000,
            avg: 1000,
            max: 2000,
        };
        assert!(bad.validate().is_err());
    }

    /// Fuzzing found it: an index naming an odd size passed validation, and chunking with it
    /// panicked (FastCDC asserts even sizes) when the client re-chunked a local file.
    #[test]
    fn odd_sizes_are_refused_before_they_reach_fastcdc() {
        for (min, avg, max) in [
            (16385, 65536, 262144),
            (16384, 65537, 262144),
            (64, 256, 1025),
        ] {
            let odd = ChunkerConfig { min, avg, max };
            assert!(odd.validate().is_err(), "{odd:?}");
        }
        let even = ChunkerConfig {
            min: 64,
            avg: 256,
            max: 1026,
        };
        assert!(even.validate().is_ok());
        assert!(chunks_of(&random(5000, 9), &even).len() > 1);
    }

    /// A reader that hands out at most a few bytes at a time (sizes from `seed`), as a pipe
    /// or a slow disk may.
    struct Trickle<'a> {
        data: &'a [u8],
        rng: StdRng,
        most: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self
                .rng
                .random_range(1..=self.most)
                .min(out.len())
                .min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The cuts FastCDC's own stream reader makes: the reference the buffer-keeping reader
    /// must match byte for byte (the golden fixtures pin them too).
    fn reference_cuts(data: &[u8], cfg: &ChunkerConfig) -> Vec<(u64, usize, Hash)> {
        fastcdc::v2020::StreamCDC::with_level(
            data,
            cfg.min as usize,
            cfg.avg as usize,
            cfg.max as usize,
            Normalization::Level1,
        )
        .map(|c| {
            let c = c.unwrap();
            (c.offset, c.length, Hash::of(&c.data))
        })
        .collect()
    }

    #[test]
    fn cuts_are_fastcdcs_own_whatever_the_reads() {
        let small = ChunkerConfig {
            min: 64,
            avg: 256,
            max: 1026,
        };
        for (cfg, len, seed) in [
            (ChunkerConfig::default(), 9 << 20, 21u64),
            (ChunkerConfig::default(), 300 << 10, 22),
            (small, 200_001, 23),
        ] {
            let mut data = random(len, seed);
            // A run of zeros: chunks cut at the largest size.
            let zeros = len / 3..(len / 3 + 3 * cfg.max as usize).min(len);
            data[zeros].fill(0);
            let want = reference_cuts(&data, &cfg);
            assert_eq!(chunks_of(&data, &cfg), want);
            for most in [1, 7, 4096, 1 << 20] {
                if most < 4096 && len > 1 << 20 {
                    continue;
                }
                let mut got = Vec::new();
                let reader = Trickle {
                    data: &data,
                    rng: StdRng::seed_from_u64(seed),
                    most,
                };
                let digest = chunk_stream::<_, std::io::Error, _>(&cfg, reader, |c| {
                    got.push((c.offset, c.data.len(), c.hash));
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, want, "reads of at most {most} bytes");
                assert_eq!(digest.hash, Hash::of(&data));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Overwriting a span leaves every chunk that ends before the span, or starts
        /// well after it, with the same id.
        #[test]
        fn overwrite_keeps_far_chunks(seed in 0u64..1000, at_frac in 0.1f64..0.9, len in 1usize..20_000) {
            let cfg = ChunkerConfig { min: 2048, avg: 8192, max: 32768 };
            let data = random(400_000, seed);
            let at = (data.len() as f64 * at_frac) as usize;
            let mut edited = data.clone();
            let end = (at + len).min(edited.len());
            for b in &mut edited[at..end] { *b ^= 0x5a; }
            let before = chunks_of(&data, &cfg);
            let after: std::collections::HashSet<Hash> = chunks_of(&edited, &cfg).into_iter().map(|c| c.2).collect();
            for (off, l, h) in before {
                let chunk_end = off as usize + l;
                if chunk_end <= at || off as usize >= end + 2 * cfg.max as usize {
                    prop_assert!(after.contains(&h), "chunk at {} len {} lost (edit {}..{})", off, l, at, end);
                }
            }
        }
    }
}
