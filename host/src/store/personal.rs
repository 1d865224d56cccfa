//! Personal data at rest: the records that hold phone numbers, client IPs, applicant
//! ids and message texts are sealed (XChaCha20-Poly1305) under a key derived from the
//! server secret, and the keys that would name a number, an applicant or an IP address
//! name a keyed hash of it instead. No number can be read from, or found by searching,
//! the store's files (sled's segments, PostgreSQL's tables and write-ahead log), so a
//! record that is purged or erased leaves no readable copy in pages the backend has
//! not rewritten yet.
//!
//! A sealed record is [`SEALED`], a random 24-byte nonce, then the ciphertext of the
//! record as [`codec`](super::codec) stores it (JSON, or zstd-compressed JSON), bound
//! to its tree and key as associated data: a sealed record moved under another key
//! does not open. [`SEALED`] (0xFE) can begin neither JSON nor a compressed record, so
//! records written before sealing read as they always did, and [`migrate`] seals them
//! (and renames the keys that named a number) once, when the server starts.
//!
//! The keys are derived with HKDF-SHA256 from the server secret under labels of their
//! own, so they are independent of the code-hashing and secrets-at-rest keys taken
//! from the same secret. A copy of the data directory reveals nothing when the
//! operator supplies the server secret from outside it (`--code-secret`).

use std::borrow::Cow;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::Rng;

use super::{Db, StoreError, Tree};

/// The first byte of a sealed record.
pub const SEALED: u8 = 0xFE;
/// Bytes of an XChaCha20 nonce, random per record.
const NONCE_BYTES: usize = 24;
/// The HKDF label of the sealing key.
const DATA_LABEL: &[u8] = b"dialgate/personal-data/v1";
/// The HKDF label of the key that hashes names in keys.
const NAME_LABEL: &[u8] = b"dialgate/personal-names/v1";
/// What a hashed name starts with: a number in E.164 starts with `+`, so a key that
/// names one in the clear is told from a renamed one by its first byte.
pub const NAME_MARK: char = '#';

/// The keys that seal personal records and hash personal names in keys.
pub struct Personal {
    cipher: XChaCha20Poly1305,
    names: [u8; 32],
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Personal(..)")
    }
}

impl Tree {
    /// Whether this tree's records hold personal data (numbers, IPs, applicants,
    /// message texts) and are stored sealed by [`Db`](super::Db)'s typed calls. (The
    /// plugins' key-value data is sealed too, by its own raw calls: see
    /// `plugins/storage.rs`.)
    pub fn sealed(self) -> bool {
        matches!(
            self,
            Tree::Verifications
                | Tree::VerificationIndex
                | Tree::VerifiedNumbers
                | Tree::GuessBudgets
                | Tree::Messages
                | Tree::Cases
                | Tree::WebhookDeliveries
                | Tree::Outbox
                | Tree::Idempotency
                | Tree::Blocklist
                | Tree::Changes
        )
    }
}

impl Personal {
    /// The keys derived from `server_secret`.
    pub fn new(server_secret: &[u8; 32]) -> Self {
        let expand = |label: &[u8]| {
            let mut key = [0u8; 32];
            hkdf::Hkdf::<sha2::Sha256>::new(None, server_secret)
                .expand(label, &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            key
        };
        Self {
            cipher: XChaCha20Poly1305::new(&expand(DATA_LABEL).into()),
            names: expand(NAME_LABEL),
        }
    }

    /// `record` (as the codec stores it) sealed for `key` in `tree`.
    pub fn seal(&self, tree: Tree, key: &[u8], record: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::rng().random();
        let aad = associated(tree, key);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: record,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any record that fits in memory");
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(SEALED);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The record under `key` in `tree` as the codec stores it: opened when sealed, as
    /// it is otherwise. `Err` says why a sealed record does not open.
    pub fn open<'a>(
        &self,
        tree: Tree,
        key: &[u8],
        bytes: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String> {
        let Some((&SEALED, rest)) = bytes.split_first() else {
            return Ok(Cow::Borrowed(bytes));
        };
        if rest.len() < NONCE_BYTES {
            return Err("its sealed form is cut short".into());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let aad = associated(tree, key);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Cow::Owned)
            .map_err(|_| {
                "it is sealed under another server secret, or for another key, or damaged".into()
            })
    }

    /// The name a key uses for `parts` (a number, a number and an applicant, an IP
    /// address) of `tenant_id`: [`NAME_MARK`] and 32 hex digits of a keyed hash. One
    /// tenant's name for a number says nothing about another tenant's.
    pub fn name(&self, tenant_id: &str, parts: &[&str]) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.names)
            .expect("HMAC takes a key of any length");
        mac.update(tenant_id.as_bytes());
        for part in parts {
            // Lengths first, so no two lists of parts hash the same bytes.
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        let mut name = String::with_capacity(33);
        name.push(NAME_MARK);
        name.push_str(&hex::encode(&digest[..16]));
        name
    }
}

/// Where the store notes that [`migrate`] has run.
const MIGRATED: &[u8] = b"personal_data_sealed/v1";

/// The trees whose keys named a number (and, for the index, an applicant) in the
/// clear before names were hashed: `tenant / e164 [/ applicant]`.
const NAMED_BY_NUMBER: [Tree; 4] = [
    Tree::VerificationIndex,
    Tree::VerifiedNumbers,
    Tree::GuessBudgets,
    Tree::Blocklist,
];

/// What [`migrate`] rewrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Records sealed where they were.
    pub sealed: u64,
    /// Records moved from a key that named a number to one that names its hash.
    pub renamed: u64,
}

/// Seals the personal records an earlier version stored in the clear, and renames the
/// keys that named a number, once per store (a mark in `Meta` says it is done; replicas
/// starting at once may both run it, and each step is a compare-and-swap).
pub fn migrate(db: &Db) -> Result<Migrated, StoreError> {
    let mut migrated = Migrated::default();
    if db.get::<bool>(Tree::Meta, MIGRATED)?.is_some() {
        return Ok(migrated);
    }
    for tree in Tree::ALL.into_iter().filter(|tree| tree.sealed()) {
        let mut start = Vec::new();
        loop {
            let chunk = db.scan_from_raw(tree, &start, 1_024)?;
            let Some((last, _)) = chunk.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, bytes) in chunk {
                if let Some(renamed) = renamed_key(db, tree, &key)? {
                    migrated.renamed +=
                        u64::from(db.restore(tree, &key, &bytes, Some(&renamed))?);
                } else if bytes.first() != Some(&SEALED) {
                    migrated.sealed += u64::from(db.restore(tree, &key, &bytes, None)?);
                }
            }
        }
    }
    db.put(Tree::Meta, MIGRATED, &true)?;
    Ok(migrated)
}

/// The key a record under `key` in `tree` takes now, if its key names a number in the
/// clear.
fn renamed_key(db: &Db, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    if !NAMED_BY_NUMBER.contains(&tree) {
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(key) else {
        return Ok(None);
    };
    let mut parts = text.splitn(3, '/');
    let (Some(tenant_id), Some(e164)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    if !e164.starts_with('+') {
        return Ok(None);
    }
    Ok(Some(if tree == Tree::VerificationIndex {
        db.applicant_key(tenant_id, e164, parts.next().unwrap_or(""))?
    } else {
        db.number_key(tenant_id, e164)?
    }))
}

/// What a sealed record is bound to: its tree and its key.
fn associated(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tree.name().len() + 1 + key.len());
    aad.extend_from_slice(tree.name().as_bytes());
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_under_its_own_key_only() {
        let personal = Personal::new(&[7; 32]);
        let record = br#"{"phone":"+447400123456"}"#;
        let sealed = personal.seal(Tree::Verifications, b"t/v1", record);
        assert_eq!(sealed[0], SEALED);
        assert!(!sealed.windows(12).any(|w| w == b"447400123456"));
        assert_eq!(
            &*personal
                .open(Tree::Verifications, b"t/v1", &sealed)
                .expect("opens"),
            record
        );
        // Another key, another tree, another secret, a damaged or cut record.
        assert!(personal
            .open(Tree::Verifications, b"t/v2", &sealed)
            .is_err());
        assert!(personal.open(Tree::Messages, b"t/v1", &sealed).is_err());
        assert!(Personal::new(&[8; 32])
            .open(Tree::Verifications, b"t/v1", &sealed)
            .is_err());
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(personal
            .open(Tree::Verifications, b"t/v1", &damaged)
            .is_err());
        assert!(personal
            .open(Tree::Verifications, b"t/v1", &sealed[..10])
            .is_err());
        // Two seals of one record differ; a record stored before sealing reads as is.
        assert_ne!(sealed, personal.seal(Tree::Verifications, b"t/v1", record));
        assert_eq!(
            &*personal
                .open(Tree::Verifications, b"t/v1", record)
                .expect("as is"),
            record
        );
    }

    #[test]
    fn names_are_keyed_per_tenant_and_unambiguous() {
        let personal = Personal::new(&[7; 32]);
        let name = personal.name("t1", &["+447400123456"]);
        assert!(name.starts_with(NAME_MARK) && name.len() == 33, "{name}");
        assert!(!name.contains("447400123456"));
        assert_eq!(name, personal.name("t1", &["+447400123456"]));
        assert_ne!(name, personal.name("t2", &["+447400123456"]));
        assert_ne!(name, Personal::new(&[8; 32]).name("t1", &["+447400123456"]));
        assert_ne!(
            personal.name("t", &["ab", "c"]),
            personal.name("t", &["a", "bc"])
        );
    }
}
