//! Parse-time checks of a component, before anything is compiled: the contract's API
//! version (from its imports: every one names the same version, which decides the
//! line of the contract the component is called through), its world (from its exports
//! in that line), every import against what that world grants,
//! and size limits on its core modules (functions, body sizes, locals, data). Parsing
//! is linear and cheap; compiling is not, so an upload that will be refused is refused
//! here, in milliseconds, with nothing compiled and nothing stored.

use serde::{Deserialize, Serialize};
use wasmparser::{ComponentTypeRef, Encoding, Parser, Payload, TypeBounds};

use super::{Contract, Kind, LoadError, WASI_GRANTED};

/// Size limits on what a tenant's component may hold. Generous for a real plugin (the
/// first-party guests use a tenth or less of each) and small enough that compiling
/// the largest accepted component stays well bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SizeLimits {
    /// Functions defined by all of the component's core modules together.
    pub max_functions: u32,
    /// Bytes of one function body.
    pub max_function_bytes: u32,
    /// Locals of one function.
    pub max_locals: u32,
    /// Bytes of function bodies in all.
    pub max_code_bytes: u64,
    /// Bytes of data segments in all.
    pub max_data_bytes: u64,
    /// Core modules and nested components.
    pub max_modules: u32,
}

impl Default for SizeLimits {
    /// 20,000 functions, 256 KiB per body, 10,000 locals per function, 4 MiB of code,
    /// 4 MiB of data, 64 modules.
    fn default() -> Self {
        Self {
            max_functions: 20_000,
            max_function_bytes: 256 << 10,
            max_locals: 10_000,
            max_code_bytes: 4 << 20,
            max_data_bytes: 4 << 20,
            max_modules: 64,
        }
    }
}

impl SizeLimits {
    /// No limit: for components checked when they were uploaded.
    pub fn unbounded() -> Self {
        Self {
            max_functions: u32::MAX,
            max_function_bytes: u32::MAX,
            max_locals: u32::MAX,
            max_code_bytes: u64::MAX,
            max_data_bytes: u64::MAX,
            max_modules: u32::MAX,
        }
    }
}

/// What parsing learned about a component that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub kind: Kind,
    /// The line of the contract the component targets.
    pub contract: Contract,
    pub functions: u32,
    pub code_bytes: u64,
    pub data_bytes: u64,
}

fn not_a_component(err: impl std::fmt::Display) -> LoadError {
    LoadError::NotAComponent(err.to_string())
}

fn too_large(what: String) -> LoadError {
    LoadError::TooLarge(what)
}

/// Checks `bytes` as a component of the contract within `limits`, by parsing alone.
pub fn inspect(bytes: &[u8], limits: &SizeLimits) -> Result<Inspection, LoadError> {
    let mut depth = 0usize;
    let mut exports: Vec<String> = Vec::new();
    let mut imports: Vec<(String, bool)> = Vec::new();
    let (mut functions, mut modules) = (0u32, 0u32);
    let (mut code_bytes, mut data_bytes) = (0u64, 0u64);
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(not_a_component)?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(LoadError::NotAComponent(
                    "this is a core WebAssembly module; build a component (wasm32-wasip2)"
                        .to_owned(),
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                depth += 1;
                modules += 1;
                if modules > limits.max_modules {
                    return Err(too_large(format!(
                        "the component nests more than {} modules and components",
                        limits.max_modules
                    )));
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(not_a_component)?;
                    // A type imported as equal to a type the component already has
                    // (how `use` of a contract type in a world is encoded) names a
                    // type; it grants nothing, so it is not checked as an import.
                    if matches!(import.ty, ComponentTypeRef::Type(TypeBounds::Eq(_))) {
                        continue;
                    }
                    let instance = matches!(import.ty, ComponentTypeRef::Instance(_));
                    imports.push((import.name.name.to_owned(), instance));
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(not_a_component)?;
                    exports.push(export.name.name.to_owned());
                }
            }
            Payload::FunctionSection(reader) => {
                functions = functions.saturating_add(reader.count());
                if functions > limits.max_functions {
                    return Err(too_large(format!(
                        "the component defines more than {} functions",
                        limits.max_functions
                    )));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len() as u64;
                if size > u64::from(limits.max_function_bytes) {
                    return Err(too_large(format!(
                        "a function body is {size} bytes; at most {} are accepted",
                        limits.max_function_bytes
                    )));
                }
                code_bytes += size;
                if code_bytes > limits.max_code_bytes {
                    return Err(too_large(format!(
                        "the component holds more than {} bytes of code",
                        limits.max_code_bytes
                    )));
                }
                let mut locals = 0u64;
                for declared in body.get_locals_reader().map_err(not_a_component)? {
                    let (count, _) = declared.map_err(not_a_component)?;
                    locals += u64::from(count);
                    if locals > u64::from(limits.max_locals) {
                        return Err(too_large(format!(
                            "a function declares more than {} locals",
                            limits.max_locals
                        )));
                    }
                }
            }
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.map_err(not_a_component)?;
                    data_bytes += data.data.len() as u64;
                    if data_bytes > limits.max_data_bytes {
                        return Err(too_large(format!(
                            "the component holds more than {} bytes of data",
                            limits.max_data_bytes
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    let imports: Vec<(&str, bool)> = imports
        .iter()
        .map(|(name, instance)| (name.as_str(), *instance))
        .collect();
    let (kind, contract) = check(&exports, &imports)?;
    Ok(Inspection {
        kind,
        contract,
        functions,
        code_bytes,
        data_bytes,
    })
}

/// The world, and the line of the contract, of a component with `exports` and
/// `imports` (each with whether it is an instance), once every import is checked.
pub(super) fn check<S: AsRef<str>>(
    exports: &[S],
    imports: &[(&str, bool)],
) -> Result<(Kind, Contract), LoadError> {
    let contract = contract(imports.iter().map(|(name, _)| *name), exports)?;
    let kind = world(exports, contract)?;
    check_imports(kind, contract, imports.iter().copied())?;
    Ok((kind, contract))
}

/// The line of the contract whose version the component's contract imports name (all
/// the same one); for a component that imports none, the line whose messaging export
/// it has, else this host's.
fn contract<'a, S: AsRef<str>>(
    imports: impl Iterator<Item = &'a str>,
    exports: &[S],
) -> Result<Contract, LoadError> {
    let mut found: Option<&str> = None;
    for name in imports {
        let Some(rest) = name.strip_prefix("dialgate:plugin/") else {
            continue;
        };
        let version = rest.split_once('@').map_or("", |(_, version)| version);
        match found {
            Some(first) if first != version => {
                return Err(LoadError::MixedVersions {
                    first: first.to_owned(),
                    second: version.to_owned(),
                })
            }
            _ => found = Some(version),
        }
    }
    match found {
        Some(version) => Contract::of(version).ok_or_else(|| LoadError::ApiVersion {
            found: version.to_owned(),
        }),
        None if exports.iter().any(|name| name.as_ref() == "send") => Ok(Contract::V0_1),
        None => Ok(Contract::V0_2),
    }
}

/// The world whose exports, in the line `contract`, the component has.
pub(super) fn world<S: AsRef<str>>(exports: &[S], contract: Contract) -> Result<Kind, LoadError> {
    [Kind::Rule, Kind::MessagingAdapter, Kind::LookupAdapter]
        .into_iter()
        .find(|kind| {
            kind.exports(contract)
                .iter()
                .all(|name| exports.iter().any(|export| export.as_ref() == *name))
        })
        .ok_or_else(|| {
            LoadError::UnknownWorld(
                exports
                    .iter()
                    .map(AsRef::as_ref)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// Checks every import (its name, and whether it is an instance) against what `kind`
/// grants in the line `contract`: the contract's interfaces of its world at a version
/// of that line, and the WASI interfaces the standard library imports.
pub(super) fn check_imports<'a>(
    kind: Kind,
    contract: Contract,
    imports: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<(), LoadError> {
    for (name, instance) in imports {
        let forbidden = || LoadError::ForbiddenImport {
            import: name.to_owned(),
            world: kind.world().to_owned(),
        };
        if !instance {
            return Err(forbidden());
        }
        if let Some(rest) = name.strip_prefix("dialgate:plugin/") {
            let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if Contract::of(version) != Some(contract) {
                return Err(LoadError::ApiVersion {
                    found: version.to_owned(),
                });
            }
            if kind.granted(contract).contains(&interface) {
                continue;
            }
        } else if WASI_GRANTED.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        return Err(forbidden());
    }
    Ok(())
}
