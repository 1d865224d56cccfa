//! Handing a code message to a provider: the tenant's providers when it has any
//! (routed and failed over by `routed.rs`); else its messaging adapters (the one a
//! rule routed to first, then the others by name, moving on when one is unavailable
//! or fails in the sandbox); else the host's own provider (the dev outbox in
//! development). Callbacks for adapters without a provider come back through
//! `POST /v1/callbacks/{tenant}/{plugin}`, authenticated by the adapter's
//! `callback_token` secret, and are parsed by the adapter that sent the message.

use subtle::ConstantTimeEq;

use crate::model::DeliveryStatus;
use crate::plugins::registry::LiveAdapter;
use crate::plugins::{AdapterMessage, CallbackRequest, Scope, SendRefusal};
use crate::providers::{Dispatch, OutboundMessage};
use crate::routing::RuleRoute;
use crate::store::{key, Tree};

use super::delivery::DeliveryRequest;
use super::{Caller, Engine, FlowError};

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
        let routing = self.tenant_routing(&message.tenant_id)?;
        if !routing.providers.is_empty() {
            return Ok(self
                .dispatch_routed(&routing, &message, country, rule, step)
                .await?
                .dispatch);
        }
        let route = rule.forced;
        let live = self.plugins.live(&message.tenant_id);
        let mut adapters: Vec<LiveAdapter> = live
            .as_ref()
            .map(|live| live.messaging().to_vec())
            .unwrap_or_default();
        if adapters.is_empty() {
            let provider = self.provider.clone().ok_or_else(|| {
                FlowError::Unavailable("no messaging provider is configured for this host".into())
            })?;
            return provider
                .send(message)
                .await
                .map_err(|err| FlowError::Provider(err.to_string()));
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
