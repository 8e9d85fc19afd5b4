//! The master's signing key and the signed statement of the current revision.
//!
//! - `DATA/signing/key`: `hummel-signing-key 1 <64 hex digits of the Ed25519 secret>`, made
//!   on first start (owner-only permissions on Unix), written atomically.
//! - `DATA/signing/rotations`: one signed [`Rotation`] per line (hex), oldest first: each old
//!   key's handover to the next one. Clients that pinned an old key follow it.
//! - Rotation (`hummel master --rotate-key`): a new key is written to `key.next`, the old key
//!   signs the rotation, which is appended to `rotations`, then `key.next` replaces `key` and
//!   the old secret is gone. A crash in between is finished (or undone) at the next start.
//!
//! The statement of the current revision is signed when first asked for and again once half
//! of its validity ([`MasterConfig::signature_expiry`](crate::MasterConfig)) has passed, so
//! the one served is always valid for at least half of it while the master runs. Only the
//! current revision is ever signed as such: a statement for an older one would let anyone who
//! asks for it hold fresh clients back. A client that pins a revision (`hummel sync --revision
//! N`) gets a statement about N under the pinned-statement magic instead
//! ([`Signing::pinned_statement`]), which a client following the master refuses.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hummel_core::Hash;
use hummel_core::statement::{KeyPair, PublicKey, Rotation, Statement};
use hummel_core::tree::{TREE_FORMAT, to_hex};

use hummel_core::RelPath;
use hummel_core::tree::SubtreeProof;
use hummel_proto::api::SigningStatus;

use crate::error::MasterError;
use crate::lock;
use crate::master::{IndexLookupError, Master};
use crate::revision::LoadedRevision;

const KEY_PREFIX: &str = "hummel-signing-key 1 ";

/// What [`Signing::open`] did with the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    /// The key of an earlier start.
    Loaded,
    /// Made now (first start).
    Made,
    /// Rotated now from the old key.
    Rotated {
        /// The retired key.
        from: PublicKey,
    },
}

/// The signing key, the rotations it came through, and the statement of the current revision.
#[derive(Debug)]
pub(crate) struct Signing {
    key: KeyPair,
    path: PathBuf,
    repository_id: String,
    expiry: Duration,
    rotations: Vec<String>,
    current: Mutex<Option<Signed>>,
}

/// A statement signed for one revision.
#[derive(Clone, Debug)]
struct Signed {
    revision: u64,
    tree_digest: Hash,
    signed_unix: i64,
    expires_unix: i64,
    hex: String,
}

/// What the master signs about a revision, besides its number and tree digest.
pub(crate) struct About {
    pub revision: u64,
    pub tree_digest: Hash,
    pub created_unix: i64,
    pub mass_delete_confirmed: bool,
}

impl Signing {
    /// Loads the key of `data` (making one on first start; rotating it first when `rotate`).
    /// Blocking.
    pub(crate) fn open(
        data: &Path,
        repository_id: &str,
        expiry: Duration,
        rotate: bool,
    ) -> Result<(Signing, KeyEvent), MasterError> {
        let dir = data.join("signing");
        fs::create_dir_all(&dir).map_err(MasterError::io(&dir))?;
        let path = dir.join("key");
        let next = dir.join("key.next");
        let rotations_path = dir.join("rotations");
        let mut rotations = read_rotations(&rotations_path)?;
        // A rotation interrupted after its key.next was written: finished when the rotation
        // was recorded, else undone.
        if next.exists() {
            let pending = read_key(&next)?;
            let recorded = rotations
                .last()
                .and_then(|r| Rotation::decode(&hex_bytes(r)?).ok())
                .is_some_and(|r| r.new_key == pending.public());
            if recorded {
                fs::rename(&next, &path).map_err(MasterError::io(&path))?;
                sync_dir(&dir)?;
            } else {
                fs::remove_file(&next).map_err(MasterError::io(&next))?;
            }
        }
        let (mut key, mut event) = if path.exists() {
            (read_key(&path)?, KeyEvent::Loaded)
        } else {
            let key = KeyPair::from_secret(&rand::random::<[u8; 32]>());
            write_key(&path, &key)?;
            (key, KeyEvent::Made)
        };
        if rotate {
            let new = KeyPair::from_secret(&rand::random::<[u8; 32]>());
            write_key(&next, &new)?;
            let rotation = Rotation {
                repository_id: repository_id.to_string(),
                old_key: key.public(),
                new_key: new.public(),
                rotated_unix: crate::now_unix(),
            };
            rotations.push(to_hex(&rotation.sign(&key)));
            let mut text = rotations.join("\n");
            text.push('\n');
            write_private_atomic(&rotations_path, text.as_bytes())?;
            fs::rename(&next, &path).map_err(MasterError::io(&path))?;
            sync_dir(&dir)?;
            event = KeyEvent::Rotated { from: key.public() };
            key = new;
        }
        Ok((
            Signing {
                key,
                path,
                repository_id: repository_id.to_string(),
                expiry,
                rotations,
                current: Mutex::new(None),
            },
            event,
        ))
    }

    /// The public key (its fingerprint is its text form).
    pub(crate) fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// `DATA/signing/key`.
    pub(crate) fn key_path(&self) -> &Path {
        &self.path
    }

    /// How long a statement holds.
    pub(crate) fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Every rotation this key came through (hex), oldest first.
    pub(crate) fn rotations(&self) -> Vec<String> {
        self.rotations.clone()
    }

    /// The signed statement (hex) about the current revision `about` at `now_unix`, and until
    /// when it holds: the one signed before while it is in the first half of its validity,
    /// else signed anew.
    pub(crate) fn statement(&self, about: &About, now_unix: i64) -> (String, i64) {
        let mut current = lock(&self.current);
        let expiry = i64::try_from(self.expiry.as_secs()).unwrap_or(i64::MAX);
        if let Some(s) = current.as_ref()
            && s.revision == about.revision
            && s.tree_digest == about.tree_digest
            && now_unix >= s.signed_unix
            && now_unix < s.signed_unix.saturating_add(expiry / 2)
            && now_unix < s.expires_unix
        {
            return (s.hex.clone(), s.expires_unix);
        }
        let statement = Statement {
            repository_id: self.repository_id.clone(),
            revision: about.revision,
            tree_format: TREE_FORMAT,
            tree_digest: about.tree_digest,
            created_unix: about.created_unix,
            signed_unix: now_unix,
            expires_unix: now_unix.saturating_add(expiry.max(1)),
            mass_delete_confirmed: about.mass_delete_confirmed,
            key: self.key.public(),
        };
        let signed = Signed {
            revision: about.revision,
            tree_digest: about.tree_digest,
            signed_unix: statement.signed_unix,
            expires_unix: statement.expires_unix,
            hex: to_hex(&statement.sign(&self.key)),
        };
        tracing::debug!(
            revision = about.revision,
            expires = signed.expires_unix,
            "signed the statement of the current revision"
        );
        let out = (signed.hex.clone(), signed.expires_unix);
        *current = Some(signed);
        out
    }
}

impl Signing {
    /// A statement about revision `about` for a client that pinned it, signed now under
    /// [`hummel_core::statement::PINNED_STATEMENT_MAGIC`] (not cached: Ed25519 signs in
    /// microseconds, and pins are rare).
    pub(crate) fn pinned_statement(&self, about: &About, now_unix: i64) -> String {
        let expiry = i64::try_from(self.expiry.as_secs()).unwrap_or(i64::MAX);
        let statement = Statement {
            repository_id: self.repository_id.clone(),
            revision: about.revision,
            tree_format: TREE_FORMAT,
            tree_digest: about.tree_digest,
            created_unix: about.created_unix,
            signed_unix: now_unix,
            expires_unix: now_unix.saturating_add(expiry.max(1)),
            mass_delete_confirmed: about.mass_delete_confirmed,
            key: self.key.public(),
        };
        to_hex(&statement.sign_pinned(&self.key))
    }
}

/// The master's signing key, as the binary shows it at start.
#[derive(Clone, Debug)]
pub struct SigningKeyInfo {
    /// The public key; its text form is the fingerprint clients pin.
    pub key: PublicKey,
    /// `DATA/signing/key`.
    pub path: PathBuf,
    /// Whether it was made, loaded or rotated at this start.
    pub event: KeyEvent,
}

impl Master {
    /// The signing key: its fingerprint, file, and what this start did with it.
    pub fn signing_key(&self) -> SigningKeyInfo {
        SigningKeyInfo {
            key: self.inner.signing.public(),
            path: self.inner.signing.key_path().to_path_buf(),
            event: self.inner.key_event.clone(),
        }
    }

    /// The signed statement (hex) about `current` (the current revision) and until when it
    /// holds.
    pub(crate) fn statement_of(&self, current: &LoadedRevision) -> (String, i64) {
        let about = About {
            revision: current.row.number,
            tree_digest: current.tree.digest(),
            created_unix: current.row.created_unix,
            mass_delete_confirmed: current.row.mass_delete_confirmed,
        };
        self.inner.signing.statement(&about, crate::now_unix())
    }

    /// The proof that the directory `dir` of revision `revision` leads to its tree digest
    /// (empty for the whole tree). Blocking for an older revision (decoded first).
    pub(crate) fn subtree_proof(
        &self,
        revision: u64,
        dir: Option<&RelPath>,
    ) -> Result<SubtreeProof, IndexLookupError> {
        let Some(dir) = dir else {
            return Ok(SubtreeProof::default());
        };
        let loaded = self.loaded_revision(Some(revision))?;
        loaded
            .tree
            .proof(&loaded.index, dir)
            .ok_or_else(|| IndexLookupError::NoSuchPath(dir.clone()))
    }

    /// `StatusResponse::signing`.
    pub(crate) fn signing_status(&self) -> SigningStatus {
        let s = &self.inner.signing;
        SigningStatus {
            fingerprint: s.public().to_string(),
            expiry_s: s.expiry().as_secs(),
            rotations: s.rotations().len() as u32,
            statement_expires_unix: self.current().map(|c| self.statement_of(&c).1),
        }
    }
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    hummel_core::tree::from_hex(text.trim(), hummel_core::statement::MAX_STATEMENT)
}

fn read_key(path: &Path) -> Result<KeyPair, MasterError> {
    let text = fs::read_to_string(path).map_err(MasterError::io(path))?;
    let bad = || MasterError::SigningKey {
        path: path.to_path_buf(),
        reason: format!("not a Hummel signing key (expected \"{KEY_PREFIX}<64 hex digits>\")"),
    };
    let hex = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
    let secret: [u8; 32] = hex_bytes(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    Ok(KeyPair::from_secret(&secret))
}

fn write_key(path: &Path, key: &KeyPair) -> Result<(), MasterError> {
    let text = format!("{KEY_PREFIX}{}\n", to_hex(&key.secret()));
    write_private_atomic(path, text.as_bytes())
}

fn read_rotations(path: &Path) -> Result<Vec<String>, MasterError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MasterError::io(path)(e)),
    };
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        hex_bytes(line)
            .and_then(|b| Rotation::decode(&b).ok())
            .ok_or_else(|| MasterError::SigningKey {
                path: path.to_path_buf(),
                reason: "holds a line that is not a signed key rotation".into(),
            })?;
        out.push(line.to_string());
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), MasterError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(MasterError::io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// [`hummel_store::write_private_atomic`], its failure naming `path`.
fn write_private_atomic(path: &Path, content: &[u8]) -> Result<(), MasterError> {
    hummel_store::write_private_atomic(path, content).map_err(MasterError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hummel_core::statement::rotation_path;

    const DAY: Duration = Duration::from_secs(86_400);

    fn about(revision: u64) -> About {
        About {
            revision,
            tree_digest: Hash::of(&revision.to_le_bytes()),
            created_unix: 100,
            mass_delete_confirmed: false,
        }
    }

    #[test]
    fn the_key_is_made_once_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, event) = Signing::open(dir.path(), "r", DAY, false).unwrap();
        assert_eq!(event, KeyEvent::Made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(a.key_path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let (b, event) = Signing::open(dir.path(), "r", DAY, false).unwrap();
        assert_eq!(event, KeyEvent::Loaded);
        assert_eq!(a.public(), b.public());
        fs::write(a.key_path(), "garbage").unwrap();
        let e = Signing::open(dir.path(), "r", DAY, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Hummel signing key"), "{e}");
    }

    #[test]
    fn statements_are_signed_again_at_half_their_validity() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Signing::open(dir.path(), "r", Duration::from_secs(100), false).unwrap();
        let (first, expires) = s.statement(&about(7), 1000);
        assert_eq!(expires, 1100);
        assert_eq!(s.statement(&about(7), 1049).0, first);
        let (second, expires) = s.statement(&about(7), 1050);
        assert_ne!(second, first);
        assert_eq!(expires, 1150);
        let st = Statement::decode(&hex_bytes(&second).unwrap()).unwrap();
        assert_eq!((st.revision, st.signed_unix, st.key), (7, 1050, s.public()));
        // Another revision: signed at once.
        let (third, _) = s.statement(&about(8), 1051);
        assert_eq!(
            Statement::decode(&hex_bytes(&third).unwrap())
                .unwrap()
                .revision,
            8
        );
    }

    #[test]
    fn a_rotation_is_signed_by_the_old_key_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Signing::open(dir.path(), "r", DAY, false).unwrap();
        let (b, event) = Signing::open(dir.path(), "r", DAY, true).unwrap();
        assert_eq!(event, KeyEvent::Rotated { from: a.public() });
        let (c, _) = Signing::open(dir.path(), "r", DAY, true).unwrap();
        let (d, event) = Signing::open(dir.path(), "r", DAY, false).unwrap();
        assert_eq!(event, KeyEvent::Loaded);
        assert_eq!(d.public(), c.public());
        let chain: Vec<Rotation> = d
            .rotations()
            .iter()
            .map(|h| Rotation::decode(&hex_bytes(h).unwrap()).unwrap())
            .collect();
        assert_eq!(
            rotation_path(a.public(), c.public(), "r", &chain),
            Some(vec![b.public(), c.public()])
        );
        // An interrupted rotation whose record never got written is undone.
        write_key(
            &dir.path().join("signing/key.next"),
            &KeyPair::from_secret(&[9; 32]),
        )
        .unwrap();
        let (e, event) = Signing::open(dir.path(), "r", DAY, false).unwrap();
        assert_eq!((e.public(), event), (c.public(), KeyEvent::Loaded));
        assert!(!dir.path().join("signing/key.next").exists());
    }
}
