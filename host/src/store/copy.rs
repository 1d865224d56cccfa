//! `dialgate store copy`: copies every record of a deployment from one store to another
//! (the embedded sled directory to a PostgreSQL database, or back), then reads both
//! again and checks each table's record count and checksum.
//!
//! The copy works on the storage contract's raw records, table by table in key order,
//! so it needs nothing from the host's record types and copies what a newer or older
//! build would read alike. The target must be empty: a copy never merges into or
//! overwrites a deployment. The source must not be written meanwhile (stop the
//! server, or every replica): a sled directory is locked by a running server anyway.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Pair, PostgresStore, SledStore, Store, StoreError, Tree};

/// Records read or written at once, for ordinary tables.
const BATCH: usize = 1_000;
/// Records read or written at once, for tables of components and compiled code (up to
/// 8 MiB and tens of MiB each).
const BLOB_BATCH: usize = 4;

/// Where a deployment's records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A sled data directory.
    Sled(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL, else a sled directory.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_owned())
        } else {
            Self::Sled(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(url) => f.write_str(&super::shown_url(url)),
            Self::Sled(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// Why a copy did not happen or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source {0} is not a Dialgate data directory (it does not exist)")]
    NoSource(String),
    #[error("the target already holds records ({records} or more in table {table}); copy only into an empty store")]
    TargetNotEmpty { table: &'static str, records: usize },
    #[error("the source and the target are the same store")]
    Same,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One table's figures after a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    /// Records read from the source.
    pub records: u64,
    /// Records found in the target afterwards.
    pub copied: u64,
    /// SHA-256 of the source's records, in key order.
    pub checksum: String,
    /// Whether the target's records hash to the same.
    pub matches: bool,
}

/// A table's count and checksum, computed as its records stream past.
#[derive(Default)]
struct Tally {
    records: u64,
    hash: Sha256,
}

impl Tally {
    fn add(&mut self, (key, value): &Pair) {
        self.records += 1;
        for part in [key, value] {
            self.hash.update((part.len() as u64).to_le_bytes());
            self.hash.update(part);
        }
    }

    fn finish(self) -> (u64, String) {
        (self.records, hex::encode(self.hash.finalize()))
    }
}

fn batch(tree: Tree) -> usize {
    match tree {
        Tree::PluginBlobs | Tree::PluginArtifacts => BLOB_BATCH,
        _ => BATCH,
    }
}

/// Calls `each` with every record of `tree`, in key order, a batch at a time.
fn for_each_batch(
    store: &dyn Store,
    tree: Tree,
    mut each: impl FnMut(&[Pair]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let size = batch(tree);
    let mut start = Vec::new();
    loop {
        let chunk = store.scan_from(tree, &start, size)?;
        each(&chunk)?;
        match chunk.last() {
            Some((last, _)) if chunk.len() == size => {
                // The smallest key after the last one read.
                start.clone_from(last);
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Opens a store as the source (`target` false: a sled directory must exist, and a
/// database is only read: its schema must be this build's, never migrated by a copy)
/// or as the target (a database's schema is migrated first).
fn open(
    location: &Location,
    target: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Box<dyn Store>, CopyError> {
    match location {
        Location::Sled(dir) => {
            if !target && !dir.join("conf").exists() {
                return Err(CopyError::NoSource(dir.display().to_string()));
            }
            Ok(Box::new(SledStore::open(dir)?))
        }
        Location::Postgres(url) => {
            let options = super::PostgresOptions {
                ca_file: ca_file.map(std::path::Path::to_owned),
                ..Default::default()
            };
            Ok(Box::new(PostgresStore::open_with(url, target, options)?))
        }
    }
}

/// Copies every table of `from` into the empty store `to` and checks the copy;
/// `progress` hears of each table once it is checked. `ca_file` holds the certificates a
/// database's must chain to, when its URL asks for TLS.
pub fn copy(
    from: &Location,
    to: &Location,
    ca_file: Option<&std::path::Path>,
    mut progress: impl FnMut(&TableCheck),
) -> Result<Vec<TableCheck>, CopyError> {
    if from == to {
        return Err(CopyError::Same);
    }
    let source = open(from, false, ca_file)?;
    let target = open(to, true, ca_file)?;
    for tree in Tree::ALL {
        let found = target.scan_from(tree, b"", BATCH)?;
        if !found.is_empty() {
            return Err(CopyError::TargetNotEmpty {
                table: tree.name(),
                records: found.len(),
            });
        }
    }
    let mut checks = Vec::new();
    for tree in Tree::ALL {
        let mut read = Tally::default();
        for_each_batch(source.as_ref(), tree, |pairs| {
            pairs.iter().for_each(|pair| read.add(pair));
            target.put_batch(tree, pairs)
        })?;
        target.flush()?;
        let mut written = Tally::default();
        for_each_batch(target.as_ref(), tree, |pairs| {
            pairs.iter().for_each(|pair| written.add(pair));
            Ok(())
        })?;
        let ((records, checksum), (copied, again)) = (read.finish(), written.finish());
        let check = TableCheck {
            table: tree.name(),
            records,
            copied,
            matches: records == copied && checksum == again,
            checksum,
        };
        progress(&check);
        checks.push(check);
    }
    Ok(checks)
}
