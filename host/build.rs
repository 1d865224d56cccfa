//! Embeds libphonenumber's carrier prefix tables (`data/carrier/*.txt`) into the binary.
//!
//! Writes `carrier_tables.rs` into `OUT_DIR`: a slice of `(calling code, table text)`
//! pairs that `phone::carrier` parses once at start-up.

use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("data/carrier");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .expect("host/data/carrier exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            stem.chars()
                .all(|c| c.is_ascii_digit())
                .then_some((stem, path))
        })
        .collect();
    entries.sort();
    let mut out = String::from("&[\n");
    for (code, path) in entries {
        out.push_str(&format!(
            "    ({code}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("carrier_tables.rs");
    fs::write(dest, out).expect("write carrier_tables.rs");
}
