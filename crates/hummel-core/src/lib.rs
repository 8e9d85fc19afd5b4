//! Pure core of Hummel: no async, no HTTP, no threads of its own.
//!
//! # Layout
//! - [`hash`]: [`Hash`], the BLAKE3 content address used for chunks, files, packs and indexes.
//! - [`chunk`]: [`ChunkerConfig`] and [`chunk_stream`], content-defined chunking (FastCDC 2020)
//!   that also hashes the whole file in the same pass, handing out chunks borrowed from one read
//!   buffer; [`chunk::Cutter`], the cut-point search alone, for readers that keep their own
//!   buffers (the push's windows).
//! - [`codec`]: per-chunk compression ([`Codec`]: zstd, or raw when zstd does not help) and the
//!   single verification gate [`codec::decode_chunk`], which bounds output and checks the id.
//! - [`pack`]: the pack format: the unit slaves store, replicate and serve. [`pack::PackWriter`]
//!   appends compressed chunks and a table of contents; a pack is named by the BLAKE3 of its bytes.
//! - [`relpath`]: [`RelPath`], a validated repository path. Every path is checked on build and on
//!   sync; nothing that could escape a folder gets through.
//! - [`portable`]: names that not every file system holds (Windows' reserved names, trailing
//!   dots and spaces, forbidden characters; names differing only in case; long paths).
//! - [`delta`]: [`delta::IndexDelta`], the changes between two revisions of a subtree, so a
//!   client that holds one fetches only what changed; checked by a digest of the result.
//! - [`changes`]: [`changes::Changelog`], what changed between two indexes (mods and files
//!   added, updated, removed), shared by the master's revision history and the player page.
//! - [`index`]: [`Index`], an immutable numbered revision (or subtree of one): directories,
//!   files with their chunk lists, and where each chunk lives. Versioned binary envelope with
//!   room for a signature.
//! - [`info`]: [`info::RepoInfo`], the repository's name, description and named sets of
//!   top-level folders: the index's info section (format 2), covered by the tree digest.
//! - [`tree`]: the tree digest, a Merkle tree of directory digests over an index, and
//!   [`tree::SubtreeProof`], which ties a subtree (or an index rebuilt from a delta) to the
//!   digest of the whole revision.
//! - [`statement`]: what the master signs about a revision ([`statement::Statement`]: the
//!   repository, the number, the tree digest, the expiry, the mass-delete confirmation), key
//!   rotations, fingerprints; Ed25519 signing and strict verification.
//!
//! Everything that is not O(1) is CPU-bound: call it from a blocking context, never from an
//! async task directly.

pub mod changes;
pub mod chunk;
pub mod codec;
pub mod delta;
pub mod hash;
pub mod index;
pub mod info;
pub mod pack;
pub mod portable;
pub mod relpath;
pub mod statement;
pub mod tree;

pub use chunk::{ChunkerConfig, chunk_stream};
pub use codec::Codec;
pub use hash::Hash;
pub use index::{ChunkLocation, DirEntry, Entry, EntryKind, FileEntry, Index, PackInfo};
pub use info::{RepoInfo, ServerInfo, SetInfo};
pub use relpath::RelPath;
