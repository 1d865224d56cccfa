//! Handing a code message to a provider: the tenant's providers when it has any
//! (routed and failed over by `routed.rs`); else its messaging adapters (the one a
//! rule routed to first, then the others by name, moving on when one is unavailable
//! or fails in the sandbox); else the host's own provider (the dev outbox in
//! development). Callbacks for adapters without a provider come back through
//! `POST /v1/callbacks/{tenant}/{plugin}`, authenticated by the adapter's
//! `callback_token` secret, and are parsed by the adapter that sent the message.
//!
//! A first-party adapter, or a provider built on one, that lacks the configuration
//! its plugin needs to send (see [`missing_config`]) is never used: installing
//! `http-sms` from the catalogue without configuring it leaves sends where they were
//! (the dev outbox in development) instead of failing them with 502.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use subtle::ConstantTimeEq;

use crate::model::DeliveryStatus;
use crate::plugins::registry::LiveAdapter;
use crate::plugins::{AdapterMessage, CallbackRequest, Scope, SendRefusal};
use crate::routing::RuleRoute;
use crate::sending::{Dispatch, OutboundMessage};
use crate::store::{key, Tree};

use crate::flows::messaging::delivery::DeliveryRequest;
use crate::flows::messaging::providers::TenantRouting;
use crate::flows::{Caller, Engine, FlowError};

/// Largest callback body accepted.
pub const MAX_CALLBACK_BYTES: usize = 64 << 10;

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("unknown callback endpoint")]
    Unknown,
    #[error("the callback token is missing or wrong")]
    Unauthorized,
    #[error("the adapter could not parse the callback: {0}")]
    Unparsable(String),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

impl Engine {
    /// Sends `message` through the tenant's providers, else its messaging adapters,
    /// else the host's provider. `rule` carries a rule's forced and forbidden
    /// providers; `step` is the channel-workflow step.
    pub(crate) async fn dispatch(
        &self,
        message: OutboundMessage,
        country: Option<&str>,
        rule: &RuleRoute<'_>,
        step: u32,
    ) -> Result<Dispatch, FlowError> {
        let routing = self.usable_routing(&message.tenant_id)?;
        if !routing.providers.is_empty() {
            return Ok(self
                .dispatch_routed(&routing, &message, country, rule, step)
                .await?
                .dispatch);
        }
        let route = rule.forced;
        let mut adapters = self.usable_adapters(&message.tenant_id);
        if adapters.is_empty() {
            let provider = self
                .sender
                .clone()
                .ok_or_else(|| FlowError::Unavailable(self.no_sender_reason(&message.tenant_id)))?;
            return provider.send(message).await.map_err(|err| match err.store {
                Some(store) => FlowError::Store(store),
                None => FlowError::Provider(err.to_string()),
            });
        }
        adapters.retain(|adapter| !rule.forbidden.contains(&adapter.name));
        adapters
            .sort_by_key(|adapter| (Some(adapter.name.as_str()) != route, adapter.name.clone()));
        let now = self.clock.now().timestamp_millis();
        let mut failures = Vec::new();
        for adapter in &adapters {
            let scope = Scope {
                tenant_id: message.tenant_id.clone(),
                plugin_id: adapter.plugin_id.clone(),
            };
            let outgoing = AdapterMessage {
                id: format!(
                    "{}-{}",
                    message.verification_id,
                    uuid::Uuid::new_v4().simple()
                ),
                to: message.phone.clone(),
                channel: message.channel,
                body: message.body.clone(),
                language: message.language.clone(),
            };
            let (_, answer) = self
                .plugins
                .runtime()
                .invoke_send(&adapter.loaded, &scope, now, adapter.call.clone(), outgoing)
                .await;
            match answer {
                Ok(Ok(dispatch)) => {
                    let index = key(&[
                        &message.tenant_id,
                        &adapter.plugin_id,
                        &dispatch.provider_message_id,
                    ]);
                    self.db
                        .put(Tree::MessageIndex, &index, &message.verification_id)?;
                    return Ok(Dispatch {
                        provider: adapter.name.clone(),
                        message_id: dispatch.provider_message_id,
                        routed: false,
                        cost: 0.0,
                    });
                }
                Ok(Err(SendRefusal::Unavailable(reason))) => {
                    failures.push(format!("{}: unavailable: {reason}", adapter.name));
                }
                Ok(Err(refusal)) => {
                    return Err(FlowError::Provider(format!("{}: {refusal}", adapter.name)));
                }
                Err(failure) => failures.push(format!("{}: {failure}", adapter.name)),
            }
            tracing::warn!(
                tenant = message.tenant_id,
                adapter = adapter.name,
                "messaging adapter failed; trying the next: {}",
                failures.last().map(String::as_str).unwrap_or_default()
            );
        }
        Err(FlowError::Provider(format!(
            "every messaging adapter failed: {}",
            failures.join("; ")
        )))
    }

    /// The tenant's providers that can send: those whose adapter is active and, when
    /// it is a first-party one, has the configuration it needs. The cached routing
    /// itself when all can.
    fn usable_routing(&self, tenant_id: &str) -> Result<Arc<TenantRouting>, FlowError> {
        let routing = self.tenant_routing(tenant_id)?;
        if routing.providers.is_empty() {
            return Ok(routing);
        }
        let Some(live) = self.plugins.live(tenant_id) else {
            return Ok(Arc::new(TenantRouting {
                policy: routing.policy.clone(),
                prepared: Arc::clone(&routing.prepared),
                ..TenantRouting::default()
            }));
        };
        let usable = |provider: &crate::flows::messaging::providers::Provider| {
            live.messaging()
                .iter()
                .find(|adapter| adapter.name == provider.plugin)
                .is_some_and(|adapter| {
                    self.prepared_call(&routing, provider, &live, adapter)
                        .missing
                        .is_empty()
                })
        };
        if routing.providers.iter().all(usable) {
            return Ok(routing);
        }
        let providers: Vec<_> = routing
            .providers
            .iter()
            .filter(|provider| usable(provider))
            .cloned()
            .collect();
        let routes = routing
            .routes
            .iter()
            .filter(|route| providers.iter().any(|provider| provider.id == route.id))
            .cloned()
            .collect();
        Ok(Arc::new(TenantRouting {
            policy: routing.policy.clone(),
            providers,
            routes,
            prepared: Arc::clone(&routing.prepared),
        }))
    }

    /// The tenant's messaging adapters that can send on their own configuration.
    fn usable_adapters(&self, tenant_id: &str) -> Vec<LiveAdapter> {
        let live = self.plugins.live(tenant_id);
        live.as_ref()
            .map(|live| {
                live.messaging()
                    .iter()
                    .filter(|adapter| {
                        self.missing_config(adapter, &adapter.call.config, &adapter.call.secrets)
                            .is_empty()
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the tenant has a provider or messaging adapter that can send.
    pub(crate) fn can_send(&self, tenant_id: &str) -> Result<bool, FlowError> {
        Ok(!self.usable_routing(tenant_id)?.providers.is_empty()
            || !self.usable_adapters(tenant_id).is_empty())
    }

    /// Why a send has nowhere to go, naming what the tenant's unusable adapters lack.
    pub(crate) fn no_sender_reason(&self, tenant_id: &str) -> String {
        let mut reason = "no messaging provider is configured for this host".to_owned();
        let live = self.plugins.live(tenant_id);
        for adapter in live.as_ref().map_or(&[][..], |live| live.messaging()) {
            let missing = self.missing_config(adapter, &adapter.call.config, &adapter.call.secrets);
            if !missing.is_empty() {
                reason.push_str(&format!(
                    "; the messaging adapter {} is not used until it is configured: it lacks {}",
                    adapter.name,
                    missing.join(", ")
                ));
            }
        }
        reason
    }

    /// What a first-party adapter lacks to send with `config` and `secrets`; nothing
    /// for a tenant's own adapters, whose needs the host cannot know.
    pub(crate) fn missing_config(
        &self,
        adapter: &LiveAdapter,
        config: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Vec<String> {
        match self.first_party(&adapter.loaded.sha256) {
            Some(name) => missing_config(name, config, secrets),
            None => Vec::new(),
        }
    }

    /// The catalogue name of the first-party plugin whose component has this hash.
    fn first_party(&self, sha256: &str) -> Option<&'static str> {
        static BY_HASH: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
        BY_HASH
            .get_or_init(|| {
                self.plugins
                    .builtins()
                    .iter()
                    .map(|builtin| (crate::plugins::content_hash(builtin.bytes), builtin.name))
                    .collect()
            })
            .get(sha256)
            .copied()
    }

    /// Handles a provider's delivery callback for the tenant's adapter `plugin_id`:
    /// checks its token, lets the adapter parse it, and records each update on the
    /// verification its message belongs to. Returns how many updates were recorded.
    pub async fn provider_callback(
        &self,
        tenant_id: &str,
        plugin_id: &str,
        token: Option<&str>,
        request: CallbackRequest,
    ) -> Result<usize, CallbackError> {
        let live = self.plugins.live(tenant_id).ok_or(CallbackError::Unknown)?;
        let adapter = live
            .messaging()
            .iter()
            .find(|adapter| adapter.plugin_id == plugin_id)
            .ok_or(CallbackError::Unknown)?;
        // Only a configured, non-empty token authenticates, and only a callback that
        // carries one: an empty token must never match an absent one.
        let expected = adapter
            .call
            .secrets
            .get("callback_token")
            .filter(|expected| !expected.is_empty())
            .ok_or(CallbackError::Unauthorized)?;
        let given = token.ok_or(CallbackError::Unauthorized)?;
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(CallbackError::Unauthorized);
        }
        let scope = Scope {
            tenant_id: tenant_id.to_owned(),
            plugin_id: plugin_id.to_owned(),
        };
        let (_, parsed) = self
            .plugins
            .runtime()
            .invoke_parse_callback(
                &adapter.loaded,
                &scope,
                self.clock.now().timestamp_millis(),
                adapter.call.clone(),
                request,
            )
            .await;
        let updates = parsed.map_err(|failure| CallbackError::Unparsable(failure.to_string()))?;
        let caller = Caller {
            tenant_id: tenant_id.to_owned(),
            client_ip: String::new(),
        };
        let mut recorded = 0;
        for update in updates {
            let index = key(&[tenant_id, plugin_id, &update.provider_message_id]);
            let found = self
                .db
                .get::<String>(Tree::MessageIndex, &index)
                .map_err(FlowError::from)?;
            let Some(verification_id) = found else {
                tracing::warn!(
                    tenant = tenant_id,
                    plugin = plugin_id,
                    "callback for an unknown message {}",
                    update.provider_message_id
                );
                continue;
            };
            let status = DeliveryStatus::from_update(update.status);
            self.delivery_update(
                &caller,
                &verification_id,
                &update.provider_message_id,
                DeliveryRequest {
                    status,
                    reason: update.reason,
                },
            )
            .await?;
            recorded += 1;
        }
        Ok(recorded)
    }
}

/// What the first-party adapter `name` lacks to send, from what its plugin reads
/// (`plugins/*/src/lib.rs`): configuration keys, and secrets as `secret NAME`. A
/// value that is blank or an angle-bracketed placeholder (`<your account sid>`)
/// counts as missing, and `base_url` must be an http(s) URL.
pub fn missing_config(
    name: &str,
    config: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Vec<String> {
    let set = |map: &BTreeMap<String, String>, key: &str| {
        map.get(key).is_some_and(|value| {
            let value = value.trim();
            let placeholder = value.starts_with('<') && value.ends_with('>');
            !value.is_empty() && !placeholder
        })
    };
    let (keys, secret_keys): (Vec<&str>, Vec<&str>) = match name {
        "http-sms" => match config.get("shape").map(|shape| shape.trim()) {
            Some("twilio") => (
                vec!["base_url", "sender", "account_sid"],
                vec!["auth_token"],
            ),
            Some("vonage") => (vec!["base_url", "sender", "api_key"], vec!["api_secret"]),
            _ => (
                vec!["shape (twilio or vonage)", "base_url", "sender"],
                vec![],
            ),
        },
        "kannel" => (vec!["base_url", "sender"], vec!["username", "password"]),
        "camara-lookup" => (vec!["base_url"], vec!["access_token"]),
        _ => (vec![], vec![]),
    };
    let mut missing: Vec<String> = keys
        .into_iter()
        .filter(|key| !set(config, key))
        .map(str::to_owned)
        .collect();
    if set(config, "base_url") && !missing.iter().any(|key| key == "base_url") {
        let url = config.get("base_url").map_or("", |url| url.trim());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            missing.push("base_url (an http(s) URL)".to_owned());
        }
    }
    missing.extend(
        secret_keys
            .into_iter()
            .filter(|key| !set(secrets, key))
            .map(|key| format!("secret {key}")),
    );
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn first_party_adapters_need_what_their_plugins_read() {
        let none = BTreeMap::new();
        assert_eq!(
            missing_config("http-sms", &none, &none),
            ["shape (twilio or vonage)", "base_url", "sender"]
        );
        let twilio = map(&[
            ("shape", "twilio"),
            ("base_url", "https://api.example.test"),
            ("sender", "Acme"),
            ("account_sid", "<your account sid>"),
        ]);
        assert_eq!(
            missing_config("http-sms", &twilio, &none),
            ["account_sid", "secret auth_token"]
        );
        let mut complete = twilio.clone();
        complete.insert("account_sid".into(), "AC123".into());
        assert!(missing_config("http-sms", &complete, &map(&[("auth_token", "t")])).is_empty());
        assert_eq!(
            missing_config(
                "kannel",
                &map(&[("base_url", "localhost:13013"), ("sender", "x")]),
                &map(&[("username", "u"), ("password", " ")])
            ),
            ["base_url (an http(s) URL)", "secret password"]
        );
        assert!(missing_config("someone-elses", &none, &none).is_empty());
    }
}
