//! The plugin contract in `sdk/wit/` parses, carries this SDK's API version, defines
//! the three worlds with the functions the host calls, documents every item, and names
//! the same triggers as the SDK.

use std::path::PathBuf;

use dialgate_sdk::{Trigger, API_VERSION};
use wit_parser::{Docs, PackageId, Resolve, TypeDefKind, WorldItem, WorldKey};

fn contract() -> (Resolve, PackageId) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wit");
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(&dir).expect("sdk/wit parses");
    (resolve, package)
}

fn documented(docs: &Docs) -> bool {
    docs.contents
        .as_deref()
        .is_some_and(|text| !text.trim().is_empty())
}

#[test]
fn the_package_is_dialgate_plugin_at_the_sdk_api_version() {
    let (resolve, package) = contract();
    let name = &resolve.packages[package].name;
    assert_eq!(name.namespace, "dialgate");
    assert_eq!(name.name, "plugin");
    assert_eq!(
        name.version.as_ref().map(ToString::to_string).as_deref(),
        Some(API_VERSION)
    );
}

#[test]
fn each_world_exports_what_the_host_calls() {
    let (resolve, package) = contract();
    let worlds = &resolve.packages[package].worlds;
    let exports = |world: &str| -> Vec<String> {
        let id = worlds[world];
        resolve.worlds[id]
            .exports
            .iter()
            .filter_map(|(key, item)| match (key, item) {
                (WorldKey::Name(name), WorldItem::Function(_)) => Some(name.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(exports("rule"), ["on-event"]);
    assert_eq!(
        exports("messaging-adapter"),
        ["send-message", "parse-callback"]
    );
    assert_eq!(exports("lookup-adapter"), ["lookup"]);
}

#[test]
fn rules_cannot_reach_the_network_and_adapters_cannot_reach_the_kv_store() {
    let (resolve, package) = contract();
    let worlds = &resolve.packages[package].worlds;
    let imports = |world: &str| -> Vec<String> {
        resolve.worlds[worlds[world]]
            .imports
            .iter()
            .filter_map(|(key, item)| match item {
                WorldItem::Interface { .. } => Some(resolve.name_world_key(key)),
                _ => None,
            })
            .collect()
    };
    let rule = imports("rule");
    assert!(
        rule.iter()
            .any(|name| name.ends_with(&format!("/kv@{}", dialgate_sdk::API_VERSION))),
        "{rule:?}"
    );
    assert!(!rule.iter().any(|name| name.contains("http")), "{rule:?}");
    for adapter in ["messaging-adapter", "lookup-adapter"] {
        let names = imports(adapter);
        assert!(
            names
                .iter()
                .any(|name| name.ends_with(&format!("/http-client@{}", dialgate_sdk::API_VERSION))),
            "{names:?}"
        );
        assert!(
            !names
                .iter()
                .any(|name| name.ends_with(&format!("/kv@{}", dialgate_sdk::API_VERSION))),
            "{names:?}"
        );
    }
}

#[test]
fn every_item_of_the_contract_is_documented() {
    let (resolve, package) = contract();
    let mut missing = Vec::new();
    let pkg = &resolve.packages[package];
    if !documented(&pkg.docs) {
        missing.push("package".to_owned());
    }
    for (name, id) in &pkg.interfaces {
        let interface = &resolve.interfaces[*id];
        if !documented(&interface.docs) {
            missing.push(format!("interface {name}"));
        }
        for (fname, function) in &interface.functions {
            if !documented(&function.docs) {
                missing.push(format!("{name}.{fname}"));
            }
        }
        for (tname, tid) in &interface.types {
            let def = &resolve.types[*tid];
            // Types brought in with `use` are aliases documented where they are defined.
            if matches!(def.kind, TypeDefKind::Type(_)) {
                continue;
            }
            if !documented(&def.docs) {
                missing.push(format!("{name}.{tname}"));
            }
            match &def.kind {
                TypeDefKind::Record(record) => missing.extend(
                    record
                        .fields
                        .iter()
                        .filter(|field| !documented(&field.docs))
                        .map(|field| format!("{name}.{tname}.{}", field.name)),
                ),
                TypeDefKind::Variant(variant) => missing.extend(
                    variant
                        .cases
                        .iter()
                        .filter(|case| !documented(&case.docs))
                        .map(|case| format!("{name}.{tname}.{}", case.name)),
                ),
                TypeDefKind::Enum(enumeration) => missing.extend(
                    enumeration
                        .cases
                        .iter()
                        .filter(|case| !documented(&case.docs))
                        .map(|case| format!("{name}.{tname}.{}", case.name)),
                ),
                _ => {}
            }
        }
    }
    for (name, id) in &pkg.worlds {
        let world = &resolve.worlds[*id];
        if !documented(&world.docs) {
            missing.push(format!("world {name}"));
        }
        for (key, item) in &world.exports {
            if let WorldItem::Function(function) = item {
                if !documented(&function.docs) {
                    missing.push(format!(
                        "world {name} export {}",
                        resolve.name_world_key(key)
                    ));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}

#[test]
fn the_contract_names_the_same_triggers_as_the_sdk() {
    let (resolve, package) = contract();
    let types = resolve.packages[package].interfaces["types"];
    let trigger = resolve.interfaces[types].types["trigger"];
    let TypeDefKind::Enum(enumeration) = &resolve.types[trigger].kind else {
        panic!("trigger is an enum");
    };
    let in_contract: Vec<String> = enumeration
        .cases
        .iter()
        .map(|case| case.name.replace('-', "_"))
        .collect();
    let in_sdk: Vec<&str> = Trigger::ALL.iter().map(|trigger| trigger.name()).collect();
    assert_eq!(in_contract, in_sdk);
}
