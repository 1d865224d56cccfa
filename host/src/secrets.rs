//! Secrets at rest: tenants' plugin and provider secrets, callback tokens and webhook
//! signing secrets are stored sealed (XChaCha20-Poly1305) under a key derived from the
//! server secret, so a copy of the data directory alone does not reveal them when the
//! operator supplies the server secret from outside it.
//!
//! The key is HKDF-SHA256 of the server secret with a purpose label of its own, so it
//! is independent of the code-hashing key taken from the same secret. Each value is
//! bound to where it belongs (its tenant, record and name, as associated data), so a
//! sealed value copied into another record does not open. A stored value is a string:
//! `dgsealed1:` and the base64 of nonce and ciphertext. A value without that prefix
//! was stored in the clear by an earlier version; it is read as it is, and
//! [`migrate`] seals every such value when the server starts.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::store::{Db, StoreError, Tree};

/// What a sealed value starts with (the format's version).
const PREFIX: &str = "dgsealed1:";
/// The HKDF label of the key: a new purpose gets a new label.
const KEY_LABEL: &[u8] = b"dialgate/secrets-at-rest/v1";
/// Bytes of an XChaCha20 nonce, random per value.
const NONCE_BYTES: usize = 24;

/// A secret as stored: sealed, or the clear text an earlier version stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_sealed() {
            "Sealed(..)"
        } else {
            "Sealed(<clear>)"
        })
    }
}

impl Sealed {
    /// Whether the value is sealed (not stored in the clear by an earlier version).
    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(PREFIX)
    }
}

/// Named secrets as stored.
pub type SealedMap = BTreeMap<String, Sealed>;

/// A sealed value that does not open: sealed under another server secret, moved, or
/// damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored secret {context} does not open with this server's secret (was the code secret changed?)")]
pub struct Unreadable {
    pub context: String,
}

/// Seals and opens secrets with the key derived from the server secret.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The box keyed by `server_secret` (the secret that also keys code hashes).
    pub fn new(server_secret: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, server_secret)
            .expand(KEY_LABEL, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `plaintext`, bound to `context` (where it is stored).
    pub fn seal(&self, context: &str, plaintext: &str) -> Sealed {
        let nonce: [u8; NONCE_BYTES] = rand::rng().random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any secret of a sane length");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Sealed(format!("{PREFIX}{}", STANDARD_NO_PAD.encode(bytes)))
    }

    /// Opens a stored value; one stored in the clear is returned as it is.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<String, Unreadable> {
        let Some(encoded) = sealed.0.strip_prefix(PREFIX) else {
            return Ok(sealed.0.clone());
        };
        let unreadable = || Unreadable {
            context: context.to_owned(),
        };
        let bytes = STANDARD_NO_PAD.decode(encoded).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_BYTES {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }

    /// Seals `value` as the secret `name` of the record `scope`.
    pub fn seal_named(&self, scope: &str, name: &str, value: &str) -> Sealed {
        self.seal(&format!("{scope}/{name}"), value)
    }

    /// Opens every secret of the record `scope`. One that does not open is logged and
    /// left out: the adapter then finds it missing, as when it was never set.
    pub fn open_all(&self, scope: &str, sealed: &SealedMap) -> BTreeMap<String, String> {
        sealed
            .iter()
            .filter_map(
                |(name, value)| match self.open(&format!("{scope}/{name}"), value) {
                    Ok(plain) => Some((name.clone(), plain)),
                    Err(err) => {
                        tracing::error!("{err}");
                        None
                    }
                },
            )
            .collect()
    }

    /// Opens the secret `name` of the record `scope`, if it is there and opens.
    pub fn open_named(&self, scope: &str, sealed: &SealedMap, name: &str) -> Option<String> {
        let value = sealed.get(name)?;
        match self.open(&format!("{scope}/{name}"), value) {
            Ok(plain) => Some(plain),
            Err(err) => {
                tracing::error!("{err}");
                None
            }
        }
    }

    /// Seals a value stored in the clear; `None` when it is sealed already.
    fn reseal(&self, context: &str, value: &Json) -> Option<Json> {
        let text = value.as_str()?;
        if text.starts_with(PREFIX) {
            return None;
        }
        Some(Json::String(self.seal(context, text).0))
    }
}

/// Where the secrets of a tenant's plugin are bound.
pub fn plugin_scope(tenant_id: &str, plugin_id: &str) -> String {
    format!("plugin/{tenant_id}/{plugin_id}")
}

/// Where the secrets of a tenant's provider are bound.
pub fn provider_scope(tenant_id: &str, provider_id: &str) -> String {
    format!("provider/{tenant_id}/{provider_id}")
}

/// Where a webhook subscription's signing secret is bound.
pub fn webhook_context(tenant_id: &str, subscription_id: &str) -> String {
    format!("webhook/{tenant_id}/{subscription_id}/secret")
}

/// Seals every secret an earlier version stored in the clear: plugin and provider
/// secrets (the `secrets` map of the records in `plugins` and `providers`) and webhook
/// signing secrets (`secret` in `webhooks`). Runs at start, before anything reads the
/// records; returns how many values it sealed.
pub fn migrate(db: &Db, secrets: &SecretBox) -> Result<usize, StoreError> {
    let mut sealed = 0;
    for tree in [Tree::Plugins, Tree::Providers] {
        for (key, mut record) in db.scan_entries::<Json>(tree, b"", usize::MAX, false)? {
            let scope = match (tree, record["tenant_id"].as_str(), record["id"].as_str()) {
                (Tree::Plugins, Some(tenant), Some(id)) => plugin_scope(tenant, id),
                (_, Some(tenant), Some(id)) => provider_scope(tenant, id),
                _ => continue,
            };
            let Some(map) = record.get_mut("secrets").and_then(Json::as_object_mut) else {
                continue;
            };
            let mut changed = false;
            for (name, value) in map.iter_mut() {
                if let Some(resealed) = secrets.reseal(&format!("{scope}/{name}"), value) {
                    *value = resealed;
                    changed = true;
                    sealed += 1;
                }
            }
            if changed {
                db.put(tree, &key, &record)?;
            }
        }
    }
    for (key, mut record) in db.scan_entries::<Json>(Tree::Webhooks, b"", usize::MAX, false)? {
        let (Some(tenant), Some(id)) = (record["tenant_id"].as_str(), record["id"].as_str()) else {
            continue;
        };
        let context = webhook_context(tenant, id);
        if let Some(resealed) = secrets.reseal(&context, &record["secret"]) {
            record["secret"] = resealed;
            db.put(Tree::Webhooks, &key, &record)?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// Where the code secret is kept when it is not configured.
const CODE_SECRET: &[u8] = b"code_hash_secret";
/// Where the data key is kept, wrapped under the server secret.
const DATA_KEY: &[u8] = b"data_key";
/// What a wrapped data key starts with (the format's version).
const WRAPPED_PREFIX: &str = "dgkey1:";
/// The HKDF label of the key that wraps the data key.
const WRAP_LABEL: &[u8] = b"dialgate/data-key-wrap/v1";

/// Why the keys of a deployment could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the code secret does not open this deployment's data key: the secret is not the one the deployment was set up or last rotated with (`dialgate store rotate-secret` changes it)"
    )]
    WrongSecret,
    #[error(
        "this deployment's code secret is kept outside its store (it was rotated to one): give it with --code-secret or --code-secret-file"
    )]
    SecretNotGiven,
    #[error("the data key changed while it was being rotated: run the rotation again")]
    Raced,
}

impl From<KeyError> for StoreError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::Store(err) => err,
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// The server secret: the configured one (hashed to 32 bytes), else the one stored in
/// the store, else a new one, generated and stored, for a store that has no data key
/// yet. A store whose secret was rotated to one kept outside it has a data key and no
/// stored secret: then the secret must be given.
pub fn server_secret(db: &Db, configured: Option<&str>) -> Result<[u8; 32], KeyError> {
    if let Some(secret) = configured {
        return Ok(<sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).into());
    }
    if db.get_raw(Tree::Meta, CODE_SECRET)?.is_none() {
        if db.get_raw(Tree::Meta, DATA_KEY)?.is_some() {
            return Err(KeyError::SecretNotGiven);
        }
        let fresh: [u8; 32] = rand::rng().random();
        db.insert_new(Tree::Meta, CODE_SECRET, &hex::encode(fresh))?;
    }
    let stored: String = db.get(Tree::Meta, CODE_SECRET)?.unwrap_or_default();
    let mut secret = [0u8; 32];
    match hex::decode(&stored) {
        Ok(bytes) if bytes.len() == 32 => secret.copy_from_slice(&bytes),
        _ => {
            return Err(StoreError::Corrupt {
                tree: "meta",
                key: "code_hash_secret".into(),
                message: "not 32 hex-encoded bytes".into(),
            }
            .into())
        }
    }
    Ok(secret)
}

/// The data key of the deployment whose server secret is `configured` (or the stored
/// one): what seals personal records and tenants' secrets and keys code hashes.
///
/// The data key is kept in the store wrapped (sealed) under a key derived from the
/// server secret, so changing the server secret rewraps one record and rewrites no
/// other (see [`rotate`]). A store that has none yet gets one on its first start: the
/// server secret itself, which is what every version before the wrapping sealed and
/// hashed with, so their records read as they always did. A secret that does not
/// unwrap the stored key is refused here, before anything is read or written with it.
pub fn data_key(db: &Db, configured: Option<&str>) -> Result<[u8; 32], KeyError> {
    let secret = server_secret(db, configured)?;
    db.compare_and_swap_raw(
        Tree::Meta,
        DATA_KEY,
        None,
        Some(wrap(&secret, &secret).as_bytes()),
    )?;
    let stored = db.get_raw(Tree::Meta, DATA_KEY)?.ok_or(KeyError::Raced)?;
    unwrap(&secret, &stored).ok_or(KeyError::WrongSecret)
}

/// Changes the deployment's server secret from `current` (or the stored one) to `new`:
/// the data key is unwrapped with the current secret and wrapped under the new one, in
/// one compare-and-swap, so every record stays readable, codes sent before still
/// verify, and a copy of the store taken afterwards does not open with the old secret.
/// A secret the store kept itself (generated on a first start) is removed: from now on
/// the operator gives the new one. Servers running meanwhile keep the data key they
/// hold; each starts again with the new secret.
pub fn rotate(db: &Db, current: Option<&str>, new: &str) -> Result<(), KeyError> {
    let secret = server_secret(db, current)?;
    let stored = db.get_raw(Tree::Meta, DATA_KEY)?;
    let key = match &stored {
        Some(wrapped) => unwrap(&secret, wrapped).ok_or(KeyError::WrongSecret)?,
        None => secret,
    };
    let new: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(new.as_bytes()).into();
    let rewrapped = wrap(&new, &key);
    if !db.compare_and_swap_raw(
        Tree::Meta,
        DATA_KEY,
        stored.as_deref(),
        Some(rewrapped.as_bytes()),
    )? {
        return Err(KeyError::Raced);
    }
    db.remove(Tree::Meta, CODE_SECRET)?;
    Ok(())
}

/// The cipher that wraps the data key under `secret`.
fn wrapping(secret: &[u8; 32]) -> XChaCha20Poly1305 {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
        .expand(WRAP_LABEL, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    XChaCha20Poly1305::new(&key.into())
}

/// `data_key` wrapped under `secret`: the prefix, then the base64 of nonce and
/// ciphertext.
fn wrap(secret: &[u8; 32], data_key: &[u8; 32]) -> String {
    let nonce: [u8; NONCE_BYTES] = rand::rng().random();
    let sealed = wrapping(secret)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: data_key,
                aad: DATA_KEY,
            },
        )
        .expect("XChaCha20-Poly1305 seals 32 bytes");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    format!("{WRAPPED_PREFIX}{}", STANDARD_NO_PAD.encode(bytes))
}

/// The data key in `wrapped`, if `secret` opens it.
fn unwrap(secret: &[u8; 32], wrapped: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(wrapped).ok()?;
    let bytes = STANDARD_NO_PAD
        .decode(text.strip_prefix(WRAPPED_PREFIX)?)
        .ok()?;
    if bytes.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let plain = wrapping(secret)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: DATA_KEY,
            },
        )
        .ok()?;
    plain.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_keeps_the_secret_as_the_data_key_and_refuses_another() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open_sled(dir.path()).expect("db");
        let secret = server_secret(&db, Some("first")).expect("secret");
        // What every version before the wrapping sealed and hashed with.
        assert_eq!(data_key(&db, Some("first")).expect("key"), secret);
        assert_eq!(data_key(&db, Some("first")).expect("again"), secret);
        let stored = db
            .get_raw(Tree::Meta, DATA_KEY)
            .expect("get")
            .expect("kept");
        assert!(!stored.windows(secret.len()).any(|window| window == secret));
        assert!(matches!(
            data_key(&db, Some("second")),
            Err(KeyError::WrongSecret)
        ));
    }

    #[test]
    fn a_rotation_keeps_the_data_key_under_the_new_secret_only() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open_sled(dir.path()).expect("db");
        let key = data_key(&db, Some("first")).expect("key");
        // A wrong current secret changes nothing.
        let before = db.get_raw(Tree::Meta, DATA_KEY).expect("get");
        assert!(matches!(
            rotate(&db, Some("wrong"), "second"),
            Err(KeyError::WrongSecret)
        ));
        assert_eq!(db.get_raw(Tree::Meta, DATA_KEY).expect("get"), before);
        rotate(&db, Some("first"), "second").expect("rotate");
        assert_eq!(data_key(&db, Some("second")).expect("new"), key);
        assert!(matches!(
            data_key(&db, Some("first")),
            Err(KeyError::WrongSecret)
        ));
        // And on again: the key stays the one the records were sealed with.
        rotate(&db, Some("second"), "third").expect("rotate again");
        assert_eq!(data_key(&db, Some("third")).expect("third"), key);
    }

    #[test]
    fn a_generated_secret_rotated_away_must_be_given_from_then_on() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open_sled(dir.path()).expect("db");
        let key = data_key(&db, None).expect("generated");
        assert_eq!(data_key(&db, None).expect("stored"), key);
        rotate(&db, None, "outside").expect("rotate");
        assert!(db.get_raw(Tree::Meta, CODE_SECRET).expect("get").is_none());
        assert!(matches!(data_key(&db, None), Err(KeyError::SecretNotGiven)));
        assert_eq!(data_key(&db, Some("outside")).expect("given"), key);
    }

    fn boxed(byte: u8) -> SecretBox {
        SecretBox::new(&[byte; 32])
    }

    #[test]
    fn a_sealed_secret_opens_where_it_was_sealed_only() {
        let secrets = boxed(1);
        let sealed = secrets.seal("plugin/t1/p1/token", "s3cret-value");
        assert!(sealed.is_sealed());
        assert!(!sealed.0.contains("s3cret-value"));
        assert_eq!(
            secrets.open("plugin/t1/p1/token", &sealed).as_deref(),
            Ok("s3cret-value")
        );
        // Moved to another record, or opened with another server secret.
        assert!(secrets.open("plugin/t2/p1/token", &sealed).is_err());
        assert!(boxed(2).open("plugin/t1/p1/token", &sealed).is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, secrets.seal("plugin/t1/p1/token", "s3cret-value"));
    }

    #[test]
    fn damaged_values_do_not_open() {
        let secrets = boxed(1);
        let Sealed(text) = secrets.seal("c", "value");
        for damaged in [
            format!("{text}A"),
            text.replacen(PREFIX, &format!("{PREFIX}x"), 1),
            PREFIX.to_owned(),
            format!("{PREFIX}!!!"),
        ] {
            assert!(
                secrets.open("c", &Sealed(damaged.clone())).is_err(),
                "{damaged}"
            );
        }
    }

    #[test]
    fn values_stored_in_the_clear_are_still_read() {
        let secrets = boxed(1);
        let legacy = Sealed("whsec_legacy".into());
        assert!(!legacy.is_sealed());
        assert_eq!(secrets.open("any", &legacy).as_deref(), Ok("whsec_legacy"));
    }

    #[test]
    fn maps_open_by_name_and_leave_out_what_does_not_open() {
        let secrets = boxed(1);
        let mut map = SealedMap::new();
        map.insert("a".into(), secrets.seal_named("s", "a", "1"));
        map.insert("b".into(), boxed(9).seal_named("s", "b", "2"));
        map.insert("c".into(), Sealed("3".into()));
        let open = secrets.open_all("s", &map);
        assert_eq!(open.get("a").map(String::as_str), Some("1"));
        assert_eq!(open.get("b"), None);
        assert_eq!(open.get("c").map(String::as_str), Some("3"));
        assert_eq!(secrets.open_named("s", &map, "a").as_deref(), Some("1"));
    }

    #[test]
    fn the_key_is_not_the_server_secret_itself() {
        // A value sealed with the raw secret as the key does not open: the key is
        // derived with its own label.
        let raw = XChaCha20Poly1305::new(&[1u8; 32].into());
        let nonce = [0u8; NONCE_BYTES];
        let ciphertext = raw
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: b"x",
                    aad: b"c",
                },
            )
            .expect("seal");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        let forged = Sealed(format!("{PREFIX}{}", STANDARD_NO_PAD.encode(bytes)));
        assert!(boxed(1).open("c", &forged).is_err());
    }

    #[test]
    fn migration_seals_clear_values_once_and_keeps_them_readable() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open_sled(dir.path()).expect("db");
        let secrets = boxed(7);
        let plugin = serde_json::json!({
            "id": "plg_1", "tenant_id": "ten_1", "secrets": {"token": "clear-token"},
        });
        let webhook = serde_json::json!({
            "id": "whk_1", "tenant_id": "ten_1", "secret": "whsec_clear",
        });
        db.put(Tree::Plugins, b"k1", &plugin).expect("put");
        db.put(Tree::Webhooks, b"k2", &webhook).expect("put");
        assert_eq!(migrate(&db, &secrets).expect("migrate"), 2);
        assert_eq!(migrate(&db, &secrets).expect("again"), 0);
        let stored: Json = db.get(Tree::Plugins, b"k1").expect("get").expect("there");
        let token: Sealed =
            serde_json::from_value(stored["secrets"]["token"].clone()).expect("sealed");
        assert!(token.is_sealed());
        assert_eq!(
            secrets
                .open(&format!("{}/token", plugin_scope("ten_1", "plg_1")), &token)
                .as_deref(),
            Ok("clear-token")
        );
        let stored: Json = db.get(Tree::Webhooks, b"k2").expect("get").expect("there");
        let secret: Sealed = serde_json::from_value(stored["secret"].clone()).expect("sealed");
        assert_eq!(
            secrets
                .open(&webhook_context("ten_1", "whk_1"), &secret)
                .as_deref(),
            Ok("whsec_clear")
        );
    }
}
