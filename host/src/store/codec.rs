//! How records are stored: JSON, and for the trees whose records are many and large
//! (verifications and their indexes), JSON compressed with zstd against a dictionary.
//!
//! A compressed record is `MARK`, the dictionary's number, then one zstd frame that
//! carries its content size. `MARK` (0xFF) can never begin JSON (it is not UTF-8), so
//! a reader tells the two forms apart by the first byte, and records written before
//! compression, or into other trees, read as they always did.
//!
//! The dictionary was trained with `zstd --train` on records a server kept while it was
//! driven through the public API: sends, resends, wrong and right codes and lookups
//! for example numbers of every region and line type, over 60 tenants. A
//! verification's record shrinks about sixfold (1.3 KB of JSON to about 200 bytes).
//! Records name their dictionary, so a dictionary once shipped is never changed or
//! removed: a better one is added under the next number and used for new writes.

use std::cell::RefCell;
use std::sync::LazyLock;

use super::{StoreError, Tree};

/// The first byte of a compressed record.
const MARK: u8 = 0xFF;

/// The dictionary new records are compressed with, by number.
const CURRENT: u8 = 1;

/// Dictionary 1 (see the module's documentation).
const DICTIONARY_1: &[u8] = include_bytes!("dictionaries/records-1.zdict");

/// zstd's level: fast, and a record is small enough that higher levels gain little.
const LEVEL: i32 = 3;

/// Records shorter than this are stored as JSON: a frame's own bytes would eat the gain.
const SMALLEST: usize = 48;

/// The largest record a frame may claim to hold (a corrupt or hostile length must not
/// make a read allocate without bound).
const LARGEST: usize = 64 * 1024 * 1024;

static ENCODER: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICTIONARY_1, LEVEL));
static DECODER: LazyLock<zstd::dict::DecoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::DecoderDictionary::copy(DICTIONARY_1));

thread_local! {
    // Contexts are costly to make (zstd zeroes their tables), so each thread keeps one.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl Tree {
    /// Whether this tree's records are stored compressed: trees that grow with every
    /// verification and are read only through [`Db`](super::Db)'s typed calls.
    pub fn compressed(self) -> bool {
        matches!(
            self,
            Tree::Verifications
                | Tree::VerificationIndex
                | Tree::VerifiedNumbers
                | Tree::GuessBudgets
                | Tree::Messages
                | Tree::Cases
                | Tree::WebhookDeliveries
        )
    }
}

/// `json` as stored in `tree`.
pub(super) fn seal(tree: Tree, json: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if !tree.compressed() || json.len() < SMALLEST {
        return Ok(json);
    }
    let frame = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(compressor) => compressor,
            None => cell.insert(zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER)?),
        };
        compressor.compress(&json)
    });
    let frame =
        frame.map_err(|err| StoreError::Backend(format!("cannot compress a record: {err}")))?;
    if frame.len() + 2 >= json.len() {
        return Ok(json);
    }
    let mut sealed = Vec::with_capacity(frame.len() + 2);
    sealed.extend_from_slice(&[MARK, CURRENT]);
    sealed.extend_from_slice(&frame);
    Ok(sealed)
}

/// The JSON of a stored record, whichever form it is in; `Err` names what is wrong
/// with a compressed one.
pub(super) fn open(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    let [MARK, dictionary, frame @ ..] = bytes else {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    };
    if *dictionary != 1 {
        return Err(format!(
            "it is compressed with dictionary {dictionary}, which this build does not know"
        ));
    }
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => usize::try_from(size).unwrap_or(usize::MAX),
        _ => return Err("its compressed frame does not say its size".into()),
    };
    if size > LARGEST {
        return Err(format!("its compressed frame claims {size} bytes"));
    }
    DECOMPRESSOR
        .with(|cell| {
            let mut cell = cell.borrow_mut();
            let decompressor = match cell.as_mut() {
                Some(decompressor) => decompressor,
                None => cell.insert(zstd::bulk::Decompressor::with_prepared_dictionary(
                    &DECODER,
                )?),
            };
            decompressor.decompress(frame, size)
        })
        .map(std::borrow::Cow::Owned)
        .map_err(|err| format!("its compressed frame does not decompress: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_compressed_and_json_reads_as_it_is() {
        let json = br#"{"id":"1ec08e1b-d064-42be-9fdd-8639d8d818e5","status":"Approved","otp_verified":true,"events":[{"trigger":"otp_sent","status":"Not Finished"}]}"#.to_vec();
        let sealed = seal(Tree::Verifications, json.clone()).expect("works");
        assert_eq!(&sealed[..2], &[MARK, CURRENT]);
        assert!(sealed.len() < json.len() / 2, "{} bytes", sealed.len());
        assert_eq!(&*open(&sealed).expect("works"), &json[..]);
        // Other trees, small records and records written before compression are JSON.
        assert_eq!(seal(Tree::Settings, json.clone()).expect("works"), json);
        assert_eq!(
            seal(Tree::Verifications, b"{}".to_vec()).expect("works"),
            b"{}"
        );
        assert_eq!(&*open(&json).expect("works"), &json[..]);
    }

    #[test]
    fn a_damaged_compressed_record_is_an_error_not_a_panic_or_a_huge_allocation() {
        let json =
            br#"{"id":"1ec08e1b-d064-42be-9fdd-8639d8d818e5","status":"Approved","events":[]}"#
                .to_vec();
        let sealed = seal(Tree::Verifications, json).expect("works");
        // Another dictionary, a cut frame, a frame that claims 1 TiB.
        let mut other = sealed.clone();
        other[1] = 9;
        assert!(open(&other).expect_err("refused").contains("dictionary 9"));
        assert!(open(&sealed[..sealed.len() - 3]).is_err());
        let mut lying = vec![MARK, CURRENT];
        // A frame header (single segment, 8-byte content size) that claims 1 TB.
        lying.extend_from_slice(&[0x28, 0xB5, 0x2F, 0xFD, 0xE0]);
        lying.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(open(&lying).expect_err("refused").contains("claims"));
    }
}
