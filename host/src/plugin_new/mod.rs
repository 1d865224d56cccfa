//! `dialgate plugin new rule|messaging-adapter|lookup-adapter NAME`: a plugin project
//! that passes its own tests with `cargo test` and builds to a component with
//! `cargo build --release --target wasm32-wasip2`, anywhere: the SDK it depends on is
//! written into the project (`vendor/dialgate-sdk`, this host's own SDK, so the
//! project speaks the contract this host runs), unless `--sdk` names a checkout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// What `plugin new` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A rule: handles trigger events and returns actions.
    Rule,
    /// A messaging adapter: hands code messages to a provider and parses its receipts.
    MessagingAdapter,
    /// A lookup adapter: asks a provider about a number.
    LookupAdapter,
}

/// `dialgate plugin new`'s arguments.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The kind of plugin.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The plugin's crate name: lowercase letters, digits, `-` and `_`, starting with a
    /// letter.
    pub name: String,
    /// Where to make the project [default: ./NAME]; it must not exist yet.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Depend on the SDK at this path (a checkout's `sdk/`) instead of a copy written
    /// into the project.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// The SDK's files, as this host was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "src/adapter.rs",
        include_str!("../../../sdk/src/adapter.rs"),
    ),
    (
        "src/contract.rs",
        include_str!("../../../sdk/src/contract.rs"),
    ),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/lookup.rs", include_str!("../../../sdk/src/lookup.rs")),
    (
        "src/messaging.rs",
        include_str!("../../../sdk/src/messaging.rs"),
    ),
    ("src/rule.rs", include_str!("../../../sdk/src/rule.rs")),
    (
        "src/services.rs",
        include_str!("../../../sdk/src/services.rs"),
    ),
    (
        "src/testing.rs",
        include_str!("../../../sdk/src/testing.rs"),
    ),
    (
        "src/workflow.rs",
        include_str!("../../../sdk/src/workflow.rs"),
    ),
    (
        "wit/plugin.wit",
        include_str!("../../../sdk/wit/plugin.wit"),
    ),
    ("README.md", include_str!("../../../sdk/README.md")),
];

/// The vendored SDK's manifest: the SDK's own dependencies, without the workspace's
/// inheritance.
const SDK_MANIFEST: &str = r#"[package]
name = "dialgate-sdk"
description = "Guest SDK for writing Dialgate rule and adapter plugins"
version = "0.1.0"
edition = "2021"
license = "Apache-2.0"
publish = false

[features]
default = ["guest"]
guest = ["dep:wit-bindgen"]

[dependencies]
postcard = { version = "1", default-features = false, features = ["alloc"] }
serde = { version = "1", features = ["derive"] }
wit-bindgen = { version = "0.46", default-features = false, features = ["macros", "realloc"], optional = true }
"#;

/// Makes the project; prints where, and what to run next.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!("{} exists already; choose another --dir", dir.display());
    }
    let sdk = match &args.sdk {
        Some(path) => {
            let path =
                std::fs::canonicalize(path).with_context(|| format!("--sdk {}", path.display()))?;
            if !path.join("wit/plugin.wit").is_file() {
                bail!("--sdk {}: not the SDK (no wit/plugin.wit)", path.display());
            }
            path.display().to_string()
        }
        None => "vendor/dialgate-sdk".to_owned(),
    };
    write_project(&dir, args.kind, &args.name, &sdk, args.sdk.is_none())?;
    println!(
        "made {} ({}) in {}\n\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  # target/wasm32-wasip2/release/{}.wasm",
        args.name,
        kind_name(args.kind),
        dir.display(),
        dir.display(),
        args.name.replace('-', "_")
    );
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Rule => "rule",
        Kind::MessagingAdapter => "messaging-adapter",
        Kind::LookupAdapter => "lookup-adapter",
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts
        || name.len() > 64
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        bail!("a plugin's name is 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    Ok(())
}

/// `my-rule` as a type name: `MyRule`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_project(
    dir: &Path,
    kind: Kind,
    name: &str,
    sdk: &str,
    vendor: bool,
) -> anyhow::Result<()> {
    let source = match kind {
        Kind::Rule => include_str!("rule.rs.txt"),
        Kind::MessagingAdapter => include_str!("messaging.rs.txt"),
        Kind::LookupAdapter => include_str!("lookup.rs.txt"),
    };
    let source = source
        .replace("{{name}}", name)
        .replace("{{Type}}", &type_name(name));
    write(&dir.join("src/lib.rs"), &source)?;
    write(
        &dir.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{name}"
description = "A Dialgate {kind} plugin"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the component; rlib: the native build `cargo test` runs.
crate-type = ["cdylib", "rlib"]

[dependencies]
dialgate-sdk = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"
strip = true

# Its own workspace, even inside another.
[workspace]
"#,
            kind = kind_name(kind),
        ),
    )?;
    // A 64 KiB stack instead of Rust's 1 MiB: each call is about three times cheaper
    // (sdk/README.md, "A rule, from nothing to a component").
    write(
        &dir.join(".cargo/config.toml"),
        "[target.wasm32-wasip2]\nrustflags = [\"-C\", \"link-arg=-zstack-size=65536\"]\n",
    )?;
    write(&dir.join(".gitignore"), "/target\n")?;
    write(
        &dir.join("README.md"),
        &format!(
            "# {name}\n\nA Dialgate {kind} plugin, made by `dialgate plugin new`.\n\n```sh\ncargo test\nrustup target add wasm32-wasip2   # once\ncargo build --release --target wasm32-wasip2\n# target/wasm32-wasip2/release/{file}.wasm\n```\n\nThe SDK's reference is `{sdk}/README.md`{copy}.\n",
            kind = kind_name(kind),
            file = name.replace('-', "_"),
            copy = if vendor {
                " (a copy of the SDK this project was made with)"
            } else {
                ""
            },
        ),
    )?;
    if vendor {
        let root = dir.join("vendor/dialgate-sdk");
        write(&root.join("Cargo.toml"), SDK_MANIFEST)?;
        for (path, text) in SDK_FILES {
            write(&root.join(path), text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_become_type_names() {
        for good in ["velocity", "my-rule", "sms_gateway2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "My-Rule", "2fast", "-x", "a b", "../escape"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("my-rule"), "MyRule");
        assert_eq!(type_name("sms_gateway2"), "SmsGateway2");
    }

    #[test]
    fn the_vendored_sdk_has_every_source_file_of_the_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&sdk)
            .expect("the SDK's sources")
            .map(|entry| {
                format!(
                    "src/{}",
                    entry.expect("an entry").file_name().to_string_lossy()
                )
            })
            .collect();
        on_disk.sort();
        let vendored: Vec<String> = SDK_FILES
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .filter(|path| path.starts_with("src/"))
            .collect();
        assert_eq!(vendored, on_disk);
        // The vendored manifest names the SDK's dependencies at the SDK's versions.
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/Cargo.toml"),
        )
        .expect("the SDK's manifest");
        for line in manifest.lines().filter(|line| {
            line.starts_with("postcard =")
                || line.starts_with("serde =")
                || line.starts_with("wit-bindgen =")
        }) {
            assert!(SDK_MANIFEST.contains(line), "{line}");
        }
    }
}
