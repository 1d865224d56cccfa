//! A test of the module layering ARCHITECTURE.md states: records and domain logic never
//! use the flows or the plugin runtime, and the runtime never uses the flows.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// (module, what it must not use), `crate::<name>` spelled out.
    const RULES: &[(&str, &[&str])] = &[
        ("model", &["flows", "plugins", "api", "server"]),
        ("templates", &["flows", "plugins", "api", "server"]),
        ("workflows", &["flows", "plugins", "api", "server"]),
        ("webhooks", &["flows", "plugins", "api", "server"]),
        ("sending", &["flows", "plugins", "api", "server"]),
        ("routing", &["flows", "plugins", "api", "server"]),
        ("settings.rs", &["flows", "plugins", "api", "server"]),
        ("permissions.rs", &["flows", "plugins", "api", "server"]),
        (
            "pumping.rs",
            &["flows", "plugins", "api", "server", "store"],
        ),
        ("pumping", &["flows", "plugins", "api", "server", "store"]),
        ("spend.rs", &["flows", "plugins", "api", "server", "store"]),
        (
            "analytics.rs",
            &["flows", "plugins", "api", "server", "store"],
        ),
        ("error.rs", &["flows", "plugins", "api", "server"]),
        ("plugins", &["flows", "api", "server"]),
        (
            "metrics.rs",
            &["flows", "plugins", "api", "server", "store"],
        ),
    ];

    fn sources(path: &Path, found: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("read a source directory") {
                sources(&entry.expect("a directory entry").path(), found);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path.to_owned());
        }
    }

    #[test]
    fn records_and_domain_logic_never_use_the_flows_or_the_runtime() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut broken = Vec::new();
        for (module, forbidden) in RULES {
            let mut files = Vec::new();
            sources(&root.join(module), &mut files);
            assert!(!files.is_empty(), "{module} has sources");
            for file in files {
                let text = std::fs::read_to_string(&file).expect("read a source file");
                // Tests may use anything: only the code before the first test module.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for name in *forbidden {
                    if code.contains(&format!("crate::{name}::"))
                        || code.contains(&format!("crate::{name};"))
                    {
                        broken.push(format!("{} uses crate::{name}", file.display()));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "layering broken: {broken:#?}");
    }
}
