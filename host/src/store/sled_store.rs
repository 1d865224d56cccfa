//! The embedded sled backend of [`Store`](super::Store).

use std::collections::HashMap;
use std::path::Path;

use super::{Pair, Store, StoreError, Tree};

/// A sled database with one sled tree per [`Tree`].
pub struct SledStore {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|err| {
                StoreError::Backend(format!(
                    "cannot open the data directory {}: {err}",
                    dir.display()
                ))
            })?;
        let mut trees = HashMap::new();
        for tree in Tree::ALL {
            trees.insert(tree, db.open_tree(tree.name()).map_err(backend)?);
        }
        Ok(Self { db, trees })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[&tree]
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree).insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(tree).remove(key).map_err(backend)?.is_some())
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tree(tree)
            .compare_and_swap(key, expected, new)
            .map_err(backend)?
            .is_ok())
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let iter = self.tree(tree).scan_prefix(prefix);
        let collect = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)
        };
        if reverse {
            iter.rev().take(limit).map(collect).collect()
        } else {
            iter.take(limit).map(collect).collect()
        }
    }

    fn scan_from(&self, tree: Tree, start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.tree(tree)
            .range(start.to_vec()..)
            .take(limit)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn scan_range(
        &self,
        tree: Tree,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let range = self.tree(tree).range(start.to_vec()..end.to_vec());
        let collect = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)
        };
        if reverse {
            range.rev().take(limit).map(collect).collect()
        } else {
            range.take(limit).map(collect).collect()
        }
    }

    fn put_batch(&self, tree: Tree, pairs: &[Pair]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in pairs {
            batch.insert(key.as_slice(), value.as_slice());
        }
        self.tree(tree).apply_batch(batch).map_err(backend)
    }

    fn size_on_disk(&self) -> Result<Option<u64>, StoreError> {
        self.db.size_on_disk().map(Some).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
