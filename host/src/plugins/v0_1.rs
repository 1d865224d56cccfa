//! The contract's 0.1 line (`dialgate:plugin@0.1.0` and `@0.1.1`), host side, so that
//! plugins built before 0.2.0 keep running.
//!
//! The bindings are generated from the frozen copy in `host/wit/0.1.1` (0.1.0 is a
//! subset of it: wasmtime's linker resolves a `@0.1.0` import to the `@0.1.1`
//! definition). Interfaces 0.2.0 left as they were are mapped onto 0.2.0's Rust types
//! with bindgen's `with`, so their values need no conversion and the host's
//! implementations of their functions (log, clock, kv, http-client, config) serve both
//! versions: [`link_rule`] and [`link_adapter`] register them a second time under the
//! 0.1.1 names. What changed is converted here: a rule's event (0.1 has no `fraud`
//! field; its rules ask the `signals` interface instead) and the messaging adapter's
//! export (`send`, renamed `send-message` in 0.2.0; [`MessagingPre`] calls a messaging
//! adapter through the bindings of its line, keeping `adapters.rs` unaware of lines). A
//! 0.1 lookup adapter's export is the same function as 0.2.0's, so 0.2.0's bindings
//! call it.

use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::Store;

use super::adapters::messaging::dialgate::plugin::messaging_types;
use super::host::State;
use super::wit::dialgate::plugin as current;
use super::{Contract, Kind};

/// Bindings of the 0.1.1 `rule` world; only `rule-types` and `signals` are its own.
pub mod rule {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "wit/0.1.1",
        exports: { default: async },
        with: {
            "dialgate:plugin/types": crate::plugins::wit::dialgate::plugin::types,
            "dialgate:plugin/log": crate::plugins::wit::dialgate::plugin::log,
            "dialgate:plugin/clock": crate::plugins::wit::dialgate::plugin::clock,
            "dialgate:plugin/kv": crate::plugins::wit::dialgate::plugin::kv,
        },
    });
}

/// Bindings of the 0.1.1 `messaging-adapter` world; every interface is 0.2.0's.
pub mod messaging {
    wasmtime::component::bindgen!({
        world: "messaging-adapter",
        path: "wit/0.1.1",
        exports: { default: async },
        with: {
            "dialgate:plugin/types": crate::plugins::wit::dialgate::plugin::types,
            "dialgate:plugin/log": crate::plugins::wit::dialgate::plugin::log,
            "dialgate:plugin/clock": crate::plugins::wit::dialgate::plugin::clock,
            "dialgate:plugin/http-client": crate::plugins::adapters::messaging::dialgate::plugin::http_client,
            "dialgate:plugin/config": crate::plugins::adapters::messaging::dialgate::plugin::config,
            "dialgate:plugin/messaging-types": crate::plugins::adapters::messaging::dialgate::plugin::messaging_types,
        },
    });
}

/// How the host's implementations reach a call's state.
type Me = HasSelf<State>;

/// The call's state, as the host's implementations take it.
fn me(state: &mut State) -> &mut State {
    state
}

/// The 0.1.1 name of the contract's interface `interface`.
fn name(interface: &str) -> String {
    format!("dialgate:plugin/{interface}@0.1.1")
}

/// Adds the 0.1.1 `rule` world's imports to a linker that has 0.2.0's.
pub(super) fn link_rule(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    current::types::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("types"))?, me)?;
    current::log::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("log"))?, me)?;
    current::clock::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("clock"))?, me)?;
    current::kv::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("kv"))?, me)?;
    rule::dialgate::plugin::rule_types::add_to_linker::<State, Me>(linker, me)?;
    rule::dialgate::plugin::signals::add_to_linker::<State, Me>(linker, me)?;
    Ok(())
}

/// Adds the 0.1.1 imports of the adapter world `kind` to a linker that has 0.2.0's.
pub(super) fn link_adapter(linker: &mut Linker<State>, kind: Kind) -> wasmtime::Result<()> {
    use super::adapters::lookup::dialgate::plugin::lookup_types;
    use super::adapters::messaging::dialgate::plugin::{config, http_client, messaging_types};
    current::types::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("types"))?, me)?;
    current::log::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("log"))?, me)?;
    current::clock::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("clock"))?, me)?;
    http_client::add_to_linker_instance::<State, Me>(
        &mut linker.instance(&name("http-client"))?,
        me,
    )?;
    config::add_to_linker_instance::<State, Me>(&mut linker.instance(&name("config"))?, me)?;
    match kind {
        Kind::LookupAdapter => lookup_types::add_to_linker_instance::<State, Me>(
            &mut linker.instance(&name("lookup-types"))?,
            me,
        ),
        _ => messaging_types::add_to_linker_instance::<State, Me>(
            &mut linker.instance(&name("messaging-types"))?,
            me,
        ),
    }
}

/// A messaging adapter ready to instantiate, through the bindings of its line: 0.2.0
/// exports `send-message`, 0.1 `send` (the same function under its old name).
pub(super) enum MessagingPre {
    V0_2(super::adapters::messaging::MessagingAdapterPre<State>),
    V0_1(messaging::MessagingAdapterPre<State>),
}

impl MessagingPre {
    /// Checks `pre`'s exports against the bindings of the line `contract`.
    pub(super) fn new(pre: InstancePre<State>, contract: Contract) -> wasmtime::Result<Self> {
        Ok(match contract {
            Contract::V0_2 => {
                MessagingPre::V0_2(super::adapters::messaging::MessagingAdapterPre::new(pre)?)
            }
            Contract::V0_1 => MessagingPre::V0_1(messaging::MessagingAdapterPre::new(pre)?),
        })
    }

    /// Instantiates the adapter in `store` and hands it `message`.
    pub(super) async fn send_message(
        &self,
        store: &mut Store<State>,
        message: &messaging_types::Message,
    ) -> wasmtime::Result<Result<messaging_types::Dispatch, messaging_types::SendError>> {
        match self {
            MessagingPre::V0_2(pre) => {
                let adapter = pre.instantiate_async(&mut *store).await?;
                adapter.call_send_message(&mut *store, message).await
            }
            MessagingPre::V0_1(pre) => {
                let adapter = pre.instantiate_async(&mut *store).await?;
                adapter.call_send(&mut *store, message).await
            }
        }
    }

    /// Instantiates the adapter in `store` and hands it a provider's callback.
    pub(super) async fn parse_callback(
        &self,
        store: &mut Store<State>,
        request: &current::types::HttpRequest,
    ) -> wasmtime::Result<Result<Vec<messaging_types::DeliveryUpdate>, current::types::PluginError>>
    {
        match self {
            MessagingPre::V0_2(pre) => {
                let adapter = pre.instantiate_async(&mut *store).await?;
                adapter.call_parse_callback(&mut *store, request).await
            }
            MessagingPre::V0_1(pre) => {
                let adapter = pre.instantiate_async(&mut *store).await?;
                adapter.call_parse_callback(&mut *store, request).await
            }
        }
    }
}

/// A 0.2.0 event as a 0.1 rule receives it: everything but the fraud signals, which
/// its `signals` interface answers during the call.
pub(super) fn event(event: &super::wit::Event) -> rule::Event {
    rule::Event {
        trigger: event.trigger,
        tenant_id: event.tenant_id.clone(),
        verification: rule::dialgate::plugin::rule_types::VerificationSnapshot {
            id: event.verification.id.clone(),
            status: event.verification.status,
            channel: event.verification.channel,
            attempts: event.verification.attempts,
            resends: event.verification.resends,
            flags: event.verification.flags.clone(),
            otp_verified: event.verification.otp_verified,
        },
        phone: event.phone.clone(),
        applicant_id: event.applicant_id.clone(),
        applicant_country: event.applicant_country.clone(),
        config: event.config.clone(),
    }
}

/// A 0.1 rule's action as 0.2.0 names it (the variants are the same).
pub(super) fn action(action: rule::Action) -> super::wit::Action {
    use super::wit::Action as Now;
    use rule::dialgate::plugin::rule_types as then;
    match action {
        rule::Action::Approve => Now::Approve,
        rule::Action::Review => Now::Review,
        rule::Action::Decline(reason) => Now::Decline(reason),
        rule::Action::AddFlag(flag) => Now::AddFlag(flag),
        rule::Action::SetRisk(then::SetRisk {
            factor,
            contribution,
            details,
        }) => Now::SetRisk(super::wit::SetRisk {
            factor,
            contribution,
            details,
        }),
        rule::Action::CreateCase(then::CreateCase {
            case_type,
            priority,
            title,
        }) => Now::CreateCase(super::wit::CreateCase {
            case_type,
            priority,
            title,
        }),
        rule::Action::RequestInfo(info) => Now::RequestInfo(info),
        rule::Action::SendOtp(channel) => Now::SendOtp(channel),
        rule::Action::Route(provider) => Now::Route(provider),
        rule::Action::Block(reason) => Now::Block(reason),
    }
}

impl rule::dialgate::plugin::rule_types::Host for State {}

impl rule::dialgate::plugin::signals::Host for State {
    fn fraud(&mut self) -> Option<rule::dialgate::plugin::signals::FraudSignals> {
        self.fraud
            .map(|signals| rule::dialgate::plugin::signals::FraudSignals {
                pumping_risk: signals.pumping_risk,
                prefix_conversion_rate: signals.prefix_conversion_rate,
                prefix_sends_hour: signals.prefix_sends_hour,
                geo_permitted: signals.geo_permitted,
            })
    }
}
