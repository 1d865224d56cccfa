//! The plugin runtime: runs rule plugins (WebAssembly components of the contract's
//! `rule` world) in a sandbox. The only module that names wasmtime.
//!
//! A plugin is compiled once into a [`RulePlugin`] (a pre-instantiated component); each
//! call gets a fresh instance in a fresh store, so nothing survives between calls or
//! crosses tenants. Per call the store has a CPU budget (fuel), a memory cap and an
//! empty WASI context: no environment, arguments, files, sockets or clocks. The host
//! imports a rule may use are log, the flow's clock and a key-value store scoped to
//! (tenant, plugin). A trap, an exhausted budget or a plugin's own error comes back as
//! a [`Failure`]; the host itself never fails with the plugin.

mod host;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;

use crate::store::Db;

use self::host::State;

/// Bindings of the `rule` world, generated from `sdk/wit/plugin.wit`.
pub mod wit {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../sdk/wit",
    });

    pub use self::dialgate::plugin::rule_types::{CreateCase, SetRisk, VerificationSnapshot};
    pub use self::dialgate::plugin::types::{
        Channel, PhoneIntelligence, RiskFactor, Trigger, VerificationStatus,
    };
}

/// Per-call limits of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) a call may use.
    pub fuel: u64,
    /// Linear memory a call may grow to, in bytes.
    pub memory_bytes: usize,
    /// Actions a call may return.
    pub max_actions: usize,
}

impl Default for Limits {
    /// 10 million units of fuel (a small rule uses a few thousand), 16 MiB of memory,
    /// 64 actions.
    fn default() -> Self {
        Self {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            max_actions: 64,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

/// Why a call did not produce actions. The sandbox's failures and the plugin's own
/// error are kept apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the plugin used up its CPU budget of {0} fuel")]
    OutOfFuel(u64),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin returned {returned} actions; at most {limit} are allowed")]
    TooManyActions { returned: usize, limit: usize },
    #[error("the plugin reported {code}: {message}")]
    Plugin { code: String, message: String },
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub actions: Vec<wit::Action>,
    pub fuel_used: u64,
    pub elapsed: Duration,
}

/// Who a call runs for: the key-value store is scoped to this pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant_id: String,
    pub plugin_id: String,
}

/// The engine and linker shared by all plugins.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<State>,
    limits: Limits,
    db: Db,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A compiled, pre-instantiated rule plugin.
pub struct RulePlugin {
    pre: wit::RulePre<State>,
}

impl std::fmt::Debug for RulePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulePlugin(..)")
    }
}

impl PluginRuntime {
    /// A runtime whose plugins keep their key-value data in `db`.
    pub fn new(db: Db, limits: Limits) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|err| LoadError(format!("{err:#}")))?;
        let mut linker = Linker::new(&engine);
        // WASI is linked for the Rust standard library's imports; the context each call
        // gets is empty, so it grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|err| LoadError(format!("{err:#}")))?;
        wit::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|err| LoadError(format!("{err:#}")))?;
        Ok(Self {
            engine,
            linker,
            limits,
            db,
        })
    }

    /// Compiles a rule component and resolves its imports. A component that is not a
    /// rule, or imports anything the runtime does not provide, is refused with an error
    /// that names what is wrong.
    pub fn compile_rule(&self, bytes: &[u8]) -> Result<RulePlugin, LoadError> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|err| LoadError(format!("not a valid component: {err:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| LoadError(format!("cannot link the component: {err:#}")))?;
        let pre = wit::RulePre::new(pre)
            .map_err(|err| LoadError(format!("not a rule plugin: {err:#}")))?;
        Ok(RulePlugin { pre })
    }

    /// Runs `plugin` on `event` in a fresh instance under the runtime's limits.
    pub fn invoke_rule(
        &self,
        plugin: &RulePlugin,
        scope: &Scope,
        now_millis: i64,
        event: &wit::Event,
    ) -> Result<Invocation, Failure> {
        let started = Instant::now();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let state = State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
            db: self.db.clone(),
            scope: scope.clone(),
            now_millis,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let budget = self.limits.fuel;
        store
            .set_fuel(budget)
            .map_err(|err| Failure::Trap(format!("{err:#}")))?;
        let result = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|rule| rule.call_on_event(&mut store, event));
        let fuel_used = budget.saturating_sub(store.get_fuel().unwrap_or(0));
        let answer = result.map_err(|err| match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel(budget),
            _ => Failure::Trap(format!("{err:#}")),
        })?;
        let actions = answer.map_err(|err| Failure::Plugin {
            code: err.code,
            message: err.message,
        })?;
        if actions.len() > self.limits.max_actions {
            return Err(Failure::TooManyActions {
                returned: actions.len(),
                limit: self.limits.max_actions,
            });
        }
        Ok(Invocation {
            actions,
            fuel_used,
            elapsed: started.elapsed(),
        })
    }
}
