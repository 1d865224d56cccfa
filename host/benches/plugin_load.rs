//! Loading plugins at scale: compiles 1,000 distinct small rule components (the
//! first-party `otp-for-voip` rule, each made distinct by a custom section), then
//! starts a second runtime on the same store and loads all 1,000 from the precompiled
//! cache, as a restart does. Prints the time of each and the resident memory each
//! loaded plugin costs. Run with `cargo bench -p dialgate --bench plugin_load`.

use std::time::Instant;

use dialgate::plugins::{builtins, Kind, Limits, PluginRuntime};
use dialgate::store::Db;

const PLUGINS: usize = 1_000;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `bytes` with a custom section naming `n` appended: the same rule, a distinct
/// component (and content hash).
fn variant(bytes: &[u8], n: usize) -> Vec<u8> {
    let name = b"dialgate-bench";
    let payload = n.to_le_bytes();
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn main() {
    let rule = builtins::all()
        .into_iter()
        .find(|builtin| builtin.name == "otp-for-voip")
        .expect("the build carries the otp-for-voip rule");
    let components: Vec<Vec<u8>> = (0..PLUGINS).map(|n| variant(rule.bytes, n)).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sled(dir.path()).expect("open sled");

    let cold = PluginRuntime::new(db.clone(), Limits::default()).expect("runtime");
    let started = Instant::now();
    let compiled: Vec<_> = components
        .iter()
        .map(|bytes| cold.load(bytes, Some(Kind::Rule)).expect("loads"))
        .collect();
    let compile = started.elapsed();
    assert_eq!(cold.stats().compiled, PLUGINS as u64);
    drop(compiled);
    drop(cold);

    let warm = PluginRuntime::new(db, Limits::default()).expect("runtime");
    let before = rss();
    let started = Instant::now();
    let loaded: Vec<_> = components
        .iter()
        .map(|bytes| warm.load(bytes, Some(Kind::Rule)).expect("loads"))
        .collect();
    let load = started.elapsed();
    let after = rss();
    assert_eq!(warm.stats().compiled, 0);
    assert_eq!(warm.stats().loaded_from_cache, PLUGINS as u64);
    println!(
        "plugin_load: component {} bytes; compile {PLUGINS} plugins {:.2} s ({:.1} ms each)",
        rule.bytes.len(),
        compile.as_secs_f64(),
        compile.as_secs_f64() * 1e3 / PLUGINS as f64
    );
    println!(
        "plugin_load: load {PLUGINS} precompiled plugins {:.3} s ({:.2} ms each), resident memory {:.0} KiB per loaded plugin",
        load.as_secs_f64(),
        load.as_secs_f64() * 1e3 / PLUGINS as f64,
        (after.saturating_sub(before)) as f64 / 1024.0 / PLUGINS as f64
    );
    drop(loaded);
}
