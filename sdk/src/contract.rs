//! The contract's interfaces as Rust, and the glue that makes a plugin a component.
//!
//! One set of types and host functions serves all three worlds: it is generated here,
//! from a world that only imports the contract's interfaces. A world's export glue is
//! generated inside the plugin instead, by the registration macros through
//! [`__generate_world!`](crate::__generate_world), against the same types.
//!
//! Why not generate each world here? wit-bindgen describes a world it generates in a
//! `component-type` custom section, and every section linked into a plugin is merged
//! into the plugin's world. A world's description includes the types it names at world
//! level (`event`, `message`, `intelligence`…), and wit-component imports those types'
//! interfaces unconditionally. Which of the SDK's object files reach a plugin is up to
//! rustc's codegen units, so a rule could link in the adapter worlds' descriptions and
//! import `messaging-types` and `lookup-types`, which the host refuses in a rule. The
//! description made here names types only inside interfaces, and wit-component drops
//! interfaces a plugin does not use, so it is harmless wherever it lands.

// Aliases for types an interface `use`s carry no documentation of their own.
#[allow(dead_code, missing_docs, clippy::too_many_arguments)]
mod generated {
    wit_bindgen::generate!({
        inline: "
            package dialgate:sdk;

            world imports {
                import dialgate:plugin/types@0.2.0;
                import dialgate:plugin/rule-types@0.2.0;
                import dialgate:plugin/messaging-types@0.2.0;
                import dialgate:plugin/lookup-types@0.2.0;
                import dialgate:plugin/workflow-types@0.2.0;
                import dialgate:plugin/log@0.2.0;
                import dialgate:plugin/clock@0.2.0;
                import dialgate:plugin/kv@0.2.0;
                import dialgate:plugin/http-client@0.2.0;
                import dialgate:plugin/config@0.2.0;
            }
        ",
        path: "wit",
        world: "dialgate:sdk/imports",
        generate_all,
    });
}

pub use generated::dialgate::plugin::{
    clock, config, http_client, kv, log, lookup_types, messaging_types, rule_types, types,
    workflow_types,
};

impl types::Trigger {
    /// The trigger's wire name, e.g. `phone_lookup_complete` (as [`crate::Trigger`]
    /// names it).
    pub fn name(self) -> &'static str {
        let shared = match self {
            types::Trigger::PhoneLookupComplete => crate::Trigger::PhoneLookupComplete,
            types::Trigger::BeforeSendOtp => crate::Trigger::BeforeSendOtp,
            types::Trigger::OtpSent => crate::Trigger::OtpSent,
            types::Trigger::OtpDeliveryUpdate => crate::Trigger::OtpDeliveryUpdate,
            types::Trigger::OtpVerified => crate::Trigger::OtpVerified,
            types::Trigger::OtpFailed => crate::Trigger::OtpFailed,
            types::Trigger::VerificationCompleted => crate::Trigger::VerificationCompleted,
        };
        shared.name()
    }
}

impl types::Channel {
    /// The channel's wire name, e.g. `sms`.
    pub fn name(self) -> &'static str {
        match self {
            types::Channel::Sms => "sms",
            types::Channel::Voice => "voice",
            types::Channel::Whatsapp => "whatsapp",
            types::Channel::Viber => "viber",
            types::Channel::Telegram => "telegram",
        }
    }
}

impl types::PluginError {
    /// An error with a machine-readable `code` and a `message` for the operator's log.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// What the registration macros need from outside the plugin crate.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// Generates, in the plugin crate, the export glue of `rule`, `messaging_adapter`,
/// `lookup_adapter` or (for the host's own interpreter) `workflow_interpreter` against
/// this module's types: a `Guest` trait and an `export!` macro. Used by the registration macros; the plugin must name the SDK
/// `dialgate_sdk`. The text below is `sdk/wit/plugin.wit` verbatim (a test keeps it
/// so), since wit-bindgen resolves a `path` from the plugin's own directory.
#[doc(hidden)]
#[macro_export]
macro_rules! __generate_world {
    (rule) => {
        $crate::__generate_world!(@contract
            world: "dialgate:plugin/rule@0.2.0",
            with: {
                "dialgate:plugin/types@0.2.0": dialgate_sdk::contract::types,
                "dialgate:plugin/rule-types@0.2.0": dialgate_sdk::contract::rule_types,
                "dialgate:plugin/log@0.2.0": dialgate_sdk::contract::log,
                "dialgate:plugin/clock@0.2.0": dialgate_sdk::contract::clock,
                "dialgate:plugin/kv@0.2.0": dialgate_sdk::contract::kv,
            },
        );
    };
    // The export is `send-message` since 0.2.0: a world export named `send` got the
    // core name `send`, which clashes with the C library's `send` that std links in on
    // wasm32-wasip2, and needed a prefixed core name (which also lost the post-return
    // functions).
    (messaging_adapter) => {
        $crate::__generate_world!(@contract
            world: "dialgate:plugin/messaging-adapter@0.2.0",
            with: {
                "dialgate:plugin/types@0.2.0": dialgate_sdk::contract::types,
                "dialgate:plugin/messaging-types@0.2.0": dialgate_sdk::contract::messaging_types,
                "dialgate:plugin/log@0.2.0": dialgate_sdk::contract::log,
                "dialgate:plugin/clock@0.2.0": dialgate_sdk::contract::clock,
                "dialgate:plugin/http-client@0.2.0": dialgate_sdk::contract::http_client,
                "dialgate:plugin/config@0.2.0": dialgate_sdk::contract::config,
            },
        );
    };
    (lookup_adapter) => {
        $crate::__generate_world!(@contract
            world: "dialgate:plugin/lookup-adapter@0.2.0",
            with: {
                "dialgate:plugin/types@0.2.0": dialgate_sdk::contract::types,
                "dialgate:plugin/lookup-types@0.2.0": dialgate_sdk::contract::lookup_types,
                "dialgate:plugin/log@0.2.0": dialgate_sdk::contract::log,
                "dialgate:plugin/clock@0.2.0": dialgate_sdk::contract::clock,
                "dialgate:plugin/http-client@0.2.0": dialgate_sdk::contract::http_client,
                "dialgate:plugin/config@0.2.0": dialgate_sdk::contract::config,
            },
        );
    };
    (workflow_interpreter) => {
        $crate::__generate_world!(@contract
            world: "dialgate:plugin/workflow-interpreter@0.2.0",
            with: {
                "dialgate:plugin/types@0.2.0": dialgate_sdk::contract::types,
                "dialgate:plugin/rule-types@0.2.0": dialgate_sdk::contract::rule_types,
                "dialgate:plugin/workflow-types@0.2.0": dialgate_sdk::contract::workflow_types,
            },
        );
    };
    (@contract $($options:tt)*) => {
        $crate::contract::__private::wit_bindgen::generate!({
            runtime_path: "dialgate_sdk::contract::__private::wit_bindgen::rt",
            // No directory: without this wit-bindgen would also read the plugin's
            // `wit/`, if it has one.
            path: [],
            $($options)*
            inline: r"/// Dialgate's plugin contract: the single source of truth for what the host gives
/// plugins and what plugins give back. Rule plugins program the verification flows of
/// one tenant; adapter plugins connect the host to messaging and lookup providers.
/// Every plugin is a WebAssembly component targeting one of the worlds below, and the
/// host checks the world and this package's version before it instantiates anything.
///
/// Versions: 0.1.1 added the `signals` interface (the fraud signals of the flow a rule
/// runs in). 0.2.0 moves those signals into the rule's event (`event.fraud`) and drops
/// `signals`, and renames the messaging adapter's export `send` to `send-message` (a
/// world export named `send` collides with the C library's `send` when a plugin is
/// linked). The host runs components of 0.1.0, 0.1.1 and 0.2.0 side by side: it reads
/// the version a component targets from its imports and calls it through that
/// version's bindings.
package dialgate:plugin@0.2.0;

/// Types shared by every world.
interface types {
    /// A point in the verification flows where rule plugins run.
    enum trigger {
        /// A number was parsed, classified and scored.
        phone-lookup-complete,
        /// A code is about to be generated and sent.
        before-send-otp,
        /// A provider accepted a code message.
        otp-sent,
        /// A provider reported a delivery status for a code message.
        otp-delivery-update,
        /// A submitted code matched.
        otp-verified,
        /// A submitted code was wrong or expired, or the attempts ran out.
        otp-failed,
        /// The verification reached a final status.
        verification-completed,
    }

    /// The overall status of a verification, as the report names it.
    enum verification-status {
        /// Verified, with nothing that needs a person to look.
        approved,
        /// Refused: by a rule, a setting, the blocklist, or exhausted attempts.
        declined,
        /// Verified, but a warning asks for a person to review it.
        in-review,
        /// Still open: a code may be sent or checked.
        not-finished,
    }

    /// A channel that delivers codes.
    enum channel {
        /// Text message.
        sms,
        /// Phone call that reads the code out.
        voice,
        /// WhatsApp message.
        whatsapp,
        /// Viber message.
        viber,
        /// Telegram message.
        telegram,
    }

    /// One risk factor that contributed to a number's score.
    record risk-factor {
        /// The factor's name, e.g. `voip-number` is reported as `voip_number`.
        factor: string,
        /// Points added to (or, when negative, taken from) the score.
        contribution: s32,
        /// A sentence explaining why the factor applies.
        details: string,
    }

    /// What the host knows about a number. Absent values are unknown, never guessed.
    record phone-intelligence {
        /// The number in E.164 form, e.g. `+14155552671`.
        e164: string,
        /// Line type in the lookup API's vocabulary: `mobile`, `landline`, `voip`,
        /// `toll_free`, `premium`, `virtual`, `shared_cost`, `uan`, `pager`,
        /// `voicemail` or `unknown`.
        line-type: string,
        /// The coarse carrier type the lookup reports: `mobile`, `landline`, `voip` or
        /// `unknown`.
        carrier-type: string,
        /// ISO 3166-1 alpha-2 country of the number; absent for non-geographic numbers.
        country: option<string>,
        /// The carrier's name, if known.
        carrier-name: option<string>,
        /// True while `carrier-name` is the operator the range was allocated to rather
        /// than a confirmed current operator.
        carrier-is-original: bool,
        /// Risk score, 0 to 100.
        risk-score: u8,
        /// `low`, `medium` or `high`.
        risk-level: string,
        /// The factors behind the score.
        risk-factors: list<risk-factor>,
        /// Whether the number was ported away from its original operator.
        ported: option<bool>,
        /// Days since the last port.
        ported-days-ago: option<u32>,
        /// Days since the SIM card behind the number last changed.
        sim-swap-days-ago: option<u32>,
        /// `active`, `inactive` or `unknown`.
        line-status: option<string>,
        /// Whether the subscriber is roaming.
        roaming: option<bool>,
    }

    /// A plugin's own, described failure (the sandbox's failures are the host's).
    record plugin-error {
        /// A short machine-readable code, e.g. `bad-config`.
        code: string,
        /// A sentence for the operator's log.
        message: string,
    }

    /// An HTTP request: outbound from an adapter, or a provider callback to parse.
    record http-request {
        /// Method, e.g. `POST`.
        method: string,
        /// Absolute URL for outbound requests; the path and query for callbacks.
        url: string,
        /// Header names and values, in order.
        headers: list<tuple<string, string>>,
        /// The body bytes.
        body: list<u8>,
    }

    /// An HTTP response to an adapter's outbound request.
    record http-response {
        /// Status code, e.g. 200.
        status: u16,
        /// Header names and values, in order.
        headers: list<tuple<string, string>>,
        /// The body bytes.
        body: list<u8>,
    }
}

/// Writing to the host's log, tagged with the plugin and tenant.
interface log {
    /// Severity of a log line.
    enum level {
        /// Fine-grained detail.
        trace,
        /// Detail useful when debugging.
        debug,
        /// Normal operation.
        info,
        /// Something unexpected that the plugin handled.
        warn,
        /// Something the plugin could not handle.
        error,
    }

    /// Writes one line; the host caps the length and rate of lines per call.
    write: func(level: level, message: string);
}

/// The host's clock: the only time a plugin can read.
interface clock {
    /// Milliseconds since the Unix epoch, as the host's flows see it.
    now-millis: func() -> s64;
}

/// A key-value store scoped to one tenant and one plugin, kept by the host.
interface kv {
    /// Why a key-value call failed.
    variant kv-error {
        /// The key is empty or longer than the host allows.
        bad-key(string),
        /// The value is larger than the host allows.
        value-too-large(u32),
        /// The plugin's share of the store is full.
        quota-exceeded,
        /// The host's store failed; retrying later may work.
        unavailable(string),
    }

    /// The value stored under `key`, if any.
    get: func(key: string) -> result<option<list<u8>>, kv-error>;
    /// Stores `value` under `key`, replacing any earlier value.
    set: func(key: string, value: list<u8>) -> result<_, kv-error>;
    /// Removes `key`; removing a missing key is not an error.
    delete: func(key: string) -> result<_, kv-error>;
    /// Adds `delta` to the integer stored under `key` (absent counts as 0) and returns
    /// the new value; the update is atomic, so concurrent calls never lose a count.
    increment: func(key: string, delta: s64) -> result<s64, kv-error>;
}

/// Outbound HTTP for adapters: only to hosts the plugin's manifest asks for and the
/// tenant granted.
interface http-client {
    use types.{http-request, http-response};

    /// Why an outbound request did not produce a response.
    variant http-error {
        /// The URL's host is not granted to this plugin; carries the host.
        not-granted(string),
        /// The URL is not an absolute http or https URL.
        bad-url(string),
        /// No response within the host's deadline.
        timeout,
        /// The connection failed; carries the reason.
        connection(string),
        /// The response was larger than the host allows.
        response-too-large,
    }

    /// Sends `request` and waits for the response.
    send: func(request: http-request) -> result<http-response, http-error>;
}

/// The tenant's configuration of an adapter.
interface config {
    /// A plain setting, e.g. a sender id or an endpoint URL.
    get: func(key: string) -> option<string>;
    /// A secret, e.g. an API token. Secrets are write-only through the host's API.
    secret: func(key: string) -> option<string>;
}

/// What rule plugins receive and return.
interface rule-types {
    use types.{trigger, verification-status, channel, phone-intelligence};

    /// The verification as it stands when the trigger fires.
    record verification-snapshot {
        /// The verification's id; absent for a lookup that started none.
        id: option<string>,
        /// Its status.
        status: verification-status,
        /// The channel of the last code sent.
        channel: option<channel>,
        /// Code entries so far.
        attempts: u32,
        /// Codes resent after the first, in the last 24 hours.
        resends: u32,
        /// Flags set so far by rules.
        %flags: list<string>,
        /// Whether a code was verified.
        otp-verified: bool,
    }

    /// Since 0.2.0: what the host's fraud defences know of the destination of the
    /// flow: the SMS-pumping detector's view of the number's prefix and the tenant's
    /// delivery permissions.
    record fraud-signals {
        /// The detector's score for the number's prefix, 0 to 100 (blocking at 80 in
        /// standard mode, 60 in strict).
        pumping-risk: u8,
        /// Codes verified over matured codes sent to the prefix the score is about,
        /// with the detector's prior; absent before any code to it matured.
        prefix-conversion-rate: option<f64>,
        /// Codes sent to that prefix within the detector's window (an hour by default);
        /// `prefix_sends_1h` in declarative rules (a WIT name cannot hold `1h`).
        prefix-sends-hour: u64,
        /// Whether the tenant's delivery permissions allow codes to the number on the
        /// flow's channel.
        geo-permitted: bool,
    }

    /// What a rule is told when its trigger fires.
    record event {
        /// The trigger that fired.
        trigger: trigger,
        /// The tenant the flow runs for.
        tenant-id: string,
        /// The verification at this point.
        verification: verification-snapshot,
        /// What is known about the number.
        phone: phone-intelligence,
        /// The applicant, as the app named them.
        applicant-id: option<string>,
        /// The country the applicant declared (ISO 3166-1 alpha-2).
        applicant-country: option<string>,
        /// The tenant's configuration of this plugin.
        config: list<tuple<string, string>>,
        /// Since 0.2.0: the fraud signals of the flow; absent where they are not known
        /// (a lookup, or the SMS-pumping detector turned off).
        fraud: option<fraud-signals>,
    }

    /// Setting a risk factor on the verification.
    record set-risk {
        /// The factor's name.
        factor: string,
        /// Points the factor adds.
        contribution: s32,
        /// Why it applies.
        details: string,
    }

    /// Opening a case for people to work.
    record create-case {
        /// The kind of case, e.g. `fraud`.
        case-type: string,
        /// `low`, `medium`, `high` or `critical`.
        priority: string,
        /// One line for the case list.
        title: string,
    }

    /// What a rule asks the host to do. Decisions merge with decline over review over
    /// approve; the host records every action on the report and the audit log.
    variant action {
        /// Approve the verification (the weakest decision).
        approve,
        /// Send the verification to review.
        review,
        /// Decline the verification; carries the reason.
        decline(string),
        /// Set a flag on the verification.
        add-flag(string),
        /// Add or replace a risk factor.
        set-risk(set-risk),
        /// Open a case.
        create-case(create-case),
        /// Ask the applicant for more information; carries what is needed.
        request-info(string),
        /// Require a code on this channel.
        send-otp(channel),
        /// Send through this provider.
        route(string),
        /// Stop the flow here; carries the reason.
        block(string),
    }
}

/// What messaging adapters receive and return.
interface messaging-types {
    use types.{channel};

    /// A code message to deliver.
    record message {
        /// The host's id of the message, echoed in delivery updates.
        id: string,
        /// The recipient, E.164.
        to: string,
        /// The channel to deliver on.
        channel: channel,
        /// The text to deliver (it contains the code).
        body: string,
        /// The language of `body`, e.g. `en`.
        language: string,
    }

    /// A provider's acceptance of a message.
    record dispatch {
        /// The provider's id of the message.
        provider-message-id: string,
        /// Message parts the provider will bill, when it says.
        segments: option<u32>,
    }

    /// Why a provider did not accept a message.
    variant send-error {
        /// The provider refused the message and retrying will not help.
        rejected(string),
        /// The provider is failing or slow; another provider may succeed.
        unavailable(string),
        /// The adapter's configuration is incomplete or wrong.
        bad-config(string),
    }

    /// Where a message is on its way to the handset.
    enum delivery-status {
        /// Waiting at the provider.
        queued,
        /// Handed to the carrier.
        sent,
        /// Delivered to the handset.
        delivered,
        /// Not delivered.
        failed,
        /// The provider gave up before delivery.
        expired,
    }

    /// A status change reported by a provider callback.
    record delivery-update {
        /// The provider's id of the message.
        provider-message-id: string,
        /// The new status.
        status: delivery-status,
        /// When the provider saw it, in milliseconds since the Unix epoch.
        at-millis: option<s64>,
        /// The provider's error code or text, for failures.
        reason: option<string>,
    }
}

/// What lookup adapters return.
interface lookup-types {
    /// One change of operator.
    record port {
        /// The operator the number left.
        from-carrier: option<string>,
        /// The operator the number joined.
        to-carrier: string,
        /// When, in milliseconds since the Unix epoch.
        at-millis: s64,
    }

    /// What a provider knows about a number; absent fields are unknown.
    record intelligence {
        /// The current operator's name.
        carrier-name: option<string>,
        /// `mobile`, `landline`, `voip` or `unknown`.
        carrier-type: option<string>,
        /// The line type, in the lookup API's vocabulary.
        line-type: option<string>,
        /// Operator changes, oldest first.
        porting-history: list<port>,
        /// When the SIM card last changed, in milliseconds since the Unix epoch.
        last-sim-change-millis: option<s64>,
        /// `active`, `inactive` or `unknown`.
        line-status: option<string>,
        /// Whether the subscriber is roaming.
        roaming: option<bool>,
        /// Whether the subscription is prepaid.
        prepaid: option<bool>,
    }
}

/// What the first-party workflow interpreter returns.
interface workflow-types {
    /// One node of a rule's condition, evaluated, for explaining a match.
    record condition-outcome {
        /// The rule's index in the program.
        rule: u32,
        /// The node's index in the rule's condition tree, in pre-order (the root is 0).
        node: u32,
        /// Whether the node matched.
        matched: bool,
        /// For a comparison, the field's value as JSON (`null` when unknown).
        value: option<string>,
    }

    /// The outcome of evaluating a program.
    record evaluation {
        /// The indices of the rules that matched, in order.
        matched: list<u32>,
        /// Every node's outcome, when an explanation was asked for.
        explanation: list<condition-outcome>,
    }
}

/// The host's first-party interpreter of tenants' declarative workflow rules. It is not
/// a world tenants upload to: the host ships the one component that targets it and
/// runs it in the same sandbox, under the same limits, as tenants' rules.
world workflow-interpreter {
    use types.{plugin-error};
    use rule-types.{event};
    use workflow-types.{evaluation};

    /// Evaluates `program` (the host's compiled form of the rules bound to the event's
    /// trigger) against `event`; with `explain`, evaluates every node and reports
    /// each one's outcome.
    export evaluate: func(program: list<u8>, event: event, explain: bool) -> result<evaluation, plugin-error>;
}

/// A tenant's rule: runs at the triggers it is bound to and returns actions.
world rule {
    import log;
    import clock;
    import kv;
    use types.{plugin-error};
    use rule-types.{event, action};

    /// Handles one trigger firing; an error is recorded on the verification and the
    /// flow continues as the tenant's fail-open or fail-closed setting says.
    export on-event: func(event: event) -> result<list<action>, plugin-error>;
}

/// An adapter that delivers code messages through a provider.
world messaging-adapter {
    import log;
    import clock;
    import http-client;
    import config;
    use types.{plugin-error, http-request};
    use messaging-types.{message, dispatch, send-error, delivery-update};

    /// Hands one message to the provider (named `send` before 0.2.0).
    export send-message: func(message: message) -> result<dispatch, send-error>;
    /// Turns a provider's delivery callback, already authenticated by the host, into
    /// status updates.
    export parse-callback: func(request: http-request) -> result<list<delivery-update>, plugin-error>;
}

/// An adapter that asks a provider what it knows about a number.
world lookup-adapter {
    import log;
    import clock;
    import http-client;
    import config;
    use types.{plugin-error};
    use lookup-types.{intelligence};

    /// Looks up one E.164 number.
    export lookup: func(number: string) -> result<intelligence, plugin-error>;
}
",
        });
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_macro_carries_the_contract_verbatim() {
        let contract = include_str!("../wit/plugin.wit");
        let this_file = include_str!("contract.rs");
        assert!(
            this_file.contains(&format!("inline: r\"{contract}\"")),
            "copy sdk/wit/plugin.wit into the `__generate_world!` macro"
        );
    }
}
