//! Sending through a tenant's providers and hearing back from them.
//!
//! A send asks routing for an order of providers and tries them in turn: each attempt
//! is a message record (queued, then sent or failed), so a send ends delivered by one
//! provider or reported failed with every attempt on the report, and no provider is
//! tried twice for one send. Statistics and the provider × country breaker learn from
//! every attempt and receipt. Receipts arrive at `/v1/callbacks/{provider_id}`,
//! authenticated per provider (token or HMAC signature), and move the message through
//! queued → sent → delivered / failed / expired; a final status is never replaced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::model::{Channel, DeliveryStatus};
use crate::plugins::registry::{LiveAdapter, TenantLive};
use crate::plugins::{AdapterCall, AdapterMessage, CallbackRequest, HttpGrant, Scope, SendRefusal};
use crate::routing::{Outcome, RuleRoute};
use crate::sending::{Dispatch, OutboundMessage};
use crate::store::{key, Tree};

use crate::flows::messaging::delivery::DeliveryRequest;
use crate::flows::messaging::dispatch::CallbackError;
use crate::flows::messaging::providers::{CallbackAuth, PreparedCall, Provider, TenantRouting};
use crate::flows::{Caller, Engine, FlowError};

/// One status a message went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub status: DeliveryStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One code message handed (or offered) to one provider.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageRecord {
    pub id: String,
    pub verification_id: String,
    pub provider_id: String,
    pub provider: String,
    pub channel: Channel,
    pub to: String,
    pub country: Option<String>,
    /// Which step of the channel workflow sent it (0 without one).
    pub step: u32,
    /// Which attempt of its send it was (0 = the first provider tried).
    pub attempt: u32,
    pub status: DeliveryStatus,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
    pub segments: Option<u32>,
    pub cost: f64,
    /// How long the provider took to accept or refuse, in milliseconds.
    pub latency_ms: Option<u64>,
    pub history: Vec<StatusChange>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Receipts that arrived before the send stored its verification, waiting to be
    /// recorded on it (see [`Engine::apply_pending_receipts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_receipts: Vec<PendingReceipt>,
}

/// A receipt recorded on its message but not yet on its verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingReceipt {
    pub status: DeliveryStatus,
    pub reason: Option<String>,
}

impl MessageRecord {
    /// Moves to `status` unless a final status was reached; records it either way.
    /// Returns whether the status changed.
    fn advance(
        &mut self,
        status: DeliveryStatus,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> bool {
        self.history.push(StatusChange {
            status,
            at,
            reason: reason.clone(),
        });
        self.updated_at = at;
        let rank = |s: DeliveryStatus| match s {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Sent => 1,
            _ => 2,
        };
        if rank(self.status) == 2 || rank(status) < rank(self.status) {
            return false;
        }
        let changed = self.status != status;
        self.status = status;
        if matches!(status, DeliveryStatus::Failed | DeliveryStatus::Expired) {
            self.error = reason.or(self.error.take());
        }
        changed
    }
}

/// What one send through the providers did.
#[derive(Debug, Clone)]
pub struct Routed {
    pub dispatch: Dispatch,
    pub provider_id: String,
    pub attempts: u32,
}

pub(crate) fn message_key(tenant_id: &str, verification_id: &str, message_id: &str) -> Vec<u8> {
    key(&[tenant_id, verification_id, message_id])
}

/// Verifies an HMAC-SHA256 signature (hex, optionally `sha256=`-prefixed) of `body`.
fn signature_ok(secret: &str, body: &[u8], given: &str) -> bool {
    let given = given.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

impl Engine {
    /// `provider`'s adapter call, prepared once for the routing's providers and the
    /// tenant's `live` plugins (see [`PreparedCall`]).
    pub(crate) fn prepared_call(
        &self,
        routing: &TenantRouting,
        provider: &Provider,
        live: &Arc<TenantLive>,
        adapter: &LiveAdapter,
    ) -> PreparedCall {
        let current = |hit: &&PreparedCall| std::ptr::eq(hit.live.as_ptr(), Arc::as_ptr(live));
        if let Some(hit) = routing.prepared.lock().get(&provider.id).filter(current) {
            return hit.clone();
        }
        // Prepared outside the lock (it opens secrets and builds a connection pool);
        // two sends racing here prepare it twice and keep one.
        let call = self.provider_call(provider, &adapter.call, routing.policy.attempt_timeout_ms);
        let prepared = PreparedCall {
            live: Arc::downgrade(live),
            missing: self.missing_config(adapter, &call.config, &call.secrets),
            call: Arc::new(call),
        };
        routing
            .prepared
            .lock()
            .insert(provider.id.clone(), prepared.clone());
        prepared
    }

    /// The configuration, secrets and grant a provider's adapter is called with: the
    /// adapter's own, overlaid with the provider's, plus what the host sets.
    fn provider_call(
        &self,
        provider: &Provider,
        base: &AdapterCall,
        policy_ms: u32,
    ) -> AdapterCall {
        let mut config: BTreeMap<String, String> = base.config.clone();
        config.extend(provider.config.clone());
        if let Some(sender) = &provider.sender_id {
            config.insert("sender".into(), sender.clone());
            config.insert("sender_id".into(), sender.clone());
        }
        config.insert("provider_id".into(), provider.id.clone());
        let provider_secrets = self.plugins.secret_box().open_all(
            &crate::secrets::provider_scope(&provider.tenant_id, &provider.id),
            &provider.secrets,
        );
        let mut callback = self.callback_url(&provider.id);
        if let (CallbackAuth::Token, Some(token)) = (
            &provider.callback_auth,
            provider_secrets.get("callback_token"),
        ) {
            callback.push_str("?token=");
            callback
                .push_str(&form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>());
        }
        config.insert("callback_url".into(), callback);
        let mut secrets = base.secrets.clone();
        secrets.extend(provider_secrets);
        let mut hosts = base.grant.hosts.clone();
        hosts.extend(provider.hosts.iter().cloned());
        if provider.hosts.is_empty() {
            // The host of the configured base URL, when the provider names one.
            if let Some(url) = provider
                .config
                .get("base_url")
                .and_then(|url| reqwest::Url::parse(url).ok())
            {
                if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
                    hosts.push(format!("{host}:{port}"));
                }
            }
        }
        AdapterCall {
            config,
            secrets,
            grant: HttpGrant { hosts },
            timeout: Some(Duration::from_millis(u64::from(
                provider.timeout_ms.unwrap_or(policy_ms),
            ))),
            client: Some(AdapterCall::provider_client(&base.egress)),
            egress: base.egress.clone(),
            trial: None,
        }
    }

    /// Sends `message` through the tenant's providers in routing's order, failing over
    /// on errors and timeouts. `step` is the channel-workflow step.
    pub(crate) async fn dispatch_routed(
        &self,
        routing: &TenantRouting,
        message: &OutboundMessage,
        country: Option<&str>,
        rule: &RuleRoute<'_>,
        step: u32,
    ) -> Result<Routed, FlowError> {
        let tenant_id = message.tenant_id.as_str();
        let plan = self.plan_route(
            tenant_id,
            routing,
            &message.phone,
            country,
            message.channel,
            rule,
        );
        if plan.order.is_empty() {
            let why: Vec<String> = plan
                .considered
                .iter()
                .map(|c| format!("{} ({})", c.name, c.verdict))
                .collect();
            return Err(FlowError::Unavailable(format!(
                "no provider can carry {} to {}: {}",
                message.channel.as_str(),
                country.unwrap_or("this destination"),
                if why.is_empty() {
                    "the tenant has no providers".to_owned()
                } else {
                    why.join(", ")
                },
            )));
        }
        let live = self.plugins.live(tenant_id);
        let cell_country = country.unwrap_or("*");
        let mut failures = Vec::new();
        let mut attempt = 0u32;
        for provider_id in &plan.order {
            let Some(provider) = routing.providers.iter().find(|p| &p.id == provider_id) else {
                continue;
            };
            let cell = self
                .replica
                .routing
                .ledger
                .cell(tenant_id, &provider.id, cell_country);
            let now = self.clock.now();
            if !cell.breaker.lock().admit(&routing.policy, now) {
                failures.push(format!("{}: breaker open", provider.name));
                continue;
            }
            let mut record = MessageRecord {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                verification_id: message.verification_id.clone(),
                provider_id: provider.id.clone(),
                provider: provider.name.clone(),
                channel: message.channel,
                to: message.phone.clone(),
                country: country.map(str::to_owned),
                step,
                attempt,
                status: DeliveryStatus::Queued,
                error: None,
                provider_message_id: None,
                segments: None,
                cost: provider.cost_per_message,
                latency_ms: None,
                history: vec![StatusChange {
                    status: DeliveryStatus::Queued,
                    at: now,
                    reason: None,
                }],
                created_at: now,
                updated_at: now,
                pending_receipts: Vec::new(),
            };
            attempt += 1;
            let record_key = message_key(tenant_id, &message.verification_id, &record.id);
            self.db.put(Tree::Messages, &record_key, &record)?;
            // Adapters whose gateway returns no id name the message by the host's id
            // (e.g. `kannel`), and their receipts may arrive before the send returns:
            // index that id first, so such a receipt finds its message.
            let early_index = key(&[&provider.id, &record.id]);
            self.db.put(
                Tree::ProviderMessages,
                &early_index,
                &String::from_utf8_lossy(&record_key).into_owned(),
            )?;
            let adapter = live.as_ref().and_then(|live| {
                let adapter = live
                    .messaging()
                    .iter()
                    .find(|a| a.name == provider.plugin)?;
                Some((live, adapter))
            });
            let started = Instant::now();
            let outcome = match adapter {
                None => Err((
                    Outcome::Error,
                    format!(
                        "messaging adapter `{}` is not installed or not active",
                        provider.plugin
                    ),
                )),
                Some((live, adapter)) => {
                    let call = self.prepared_call(routing, provider, live, adapter).call;
                    let budget =
                        call.timeout.unwrap_or(Duration::from_secs(5)) + Duration::from_millis(500);
                    let scope = Scope {
                        tenant_id: tenant_id.to_owned(),
                        plugin_id: adapter.plugin_id.clone(),
                    };
                    let outgoing = AdapterMessage {
                        id: record.id.clone(),
                        to: message.phone.clone(),
                        channel: message.channel,
                        body: message.body.clone(),
                        language: message.language.clone(),
                    };
                    let invoked = self.plugins.runtime().invoke_send(
                        &adapter.loaded,
                        &scope,
                        now.timestamp_millis(),
                        Arc::clone(&call),
                        outgoing,
                    );
                    match tokio::time::timeout(budget, invoked).await {
                        Err(_) => Err((Outcome::Timeout, "timed out".to_owned())),
                        Ok((_, Ok(Ok(dispatch)))) => Ok(dispatch),
                        Ok((_, Ok(Err(refusal)))) => {
                            let timed_out = matches!(&refusal, SendRefusal::Unavailable(_))
                                && call.timeout.is_some_and(|t| started.elapsed() >= t);
                            let kind = if timed_out {
                                Outcome::Timeout
                            } else {
                                Outcome::Error
                            };
                            Err((kind, refusal.to_string()))
                        }
                        Ok((_, Err(failure))) => Err((Outcome::Error, failure.to_string())),
                    }
                }
            };
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let after = self.clock.now();
            record.latency_ms = Some(latency_ms);
            match outcome {
                Ok(dispatch) => {
                    cell.breaker.lock().succeeded();
                    cell.stats.lock().record(
                        &routing.policy,
                        after,
                        Outcome::Accepted { latency_ms },
                    );
                    // Merged into the stored record: a receipt may have advanced it.
                    self.db.update::<MessageRecord, FlowError, ()>(
                        Tree::Messages,
                        &record_key,
                        |current| {
                            let mut current = current.unwrap_or_else(|| record.clone());
                            current.provider_message_id =
                                Some(dispatch.provider_message_id.clone());
                            current.segments = dispatch.segments;
                            current.latency_ms = Some(latency_ms);
                            current.advance(DeliveryStatus::Sent, after, None);
                            Ok((Some(current), ()))
                        },
                    )?;
                    if dispatch.provider_message_id != record.id {
                        self.db.remove(Tree::ProviderMessages, &early_index)?;
                        self.db.put(
                            Tree::ProviderMessages,
                            &key(&[&provider.id, &dispatch.provider_message_id]),
                            &String::from_utf8_lossy(&record_key).into_owned(),
                        )?;
                    }
                    return Ok(Routed {
                        dispatch: Dispatch {
                            provider: provider.name.clone(),
                            message_id: record.id,
                            routed: true,
                            cost: provider.cost_per_message,
                        },
                        provider_id: provider.id.clone(),
                        attempts: attempt,
                    });
                }
                Err((kind, reason)) => {
                    cell.breaker.lock().failed(&routing.policy, after);
                    cell.stats.lock().record(&routing.policy, after, kind);
                    record.advance(DeliveryStatus::Failed, after, Some(reason.clone()));
                    self.db.put(Tree::Messages, &record_key, &record)?;
                    self.db.remove(Tree::ProviderMessages, &early_index)?;
                    tracing::warn!(
                        tenant = tenant_id,
                        provider = provider.name,
                        "provider failed ({reason}); trying the next"
                    );
                    failures.push(format!("{}: {reason}", provider.name));
                }
            }
        }
        let skipped: Vec<String> = plan
            .considered
            .iter()
            .filter(|c| c.verdict != "selected")
            .map(|c| format!("{} ({})", c.name, c.verdict))
            .collect();
        Err(FlowError::Provider(format!(
            "every provider failed: {}{}",
            failures.join("; "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; not tried: {}", skipped.join(", "))
            }
        )))
    }

    /// The messages of one verification, oldest first.
    pub(crate) fn messages_of(
        &self,
        tenant_id: &str,
        verification_id: &str,
    ) -> Result<Vec<MessageRecord>, FlowError> {
        let mut messages: Vec<MessageRecord> = self.db.scan(
            Tree::Messages,
            &key(&[tenant_id, verification_id, ""]),
            1_000,
            false,
        )?;
        messages.sort_by(|a, b| {
            (a.created_at, a.step, a.attempt).cmp(&(b.created_at, b.step, b.attempt))
        });
        Ok(messages)
    }

    /// Marks the messages of a verification that are still on their way as expired
    /// (their code can no longer be used). Returns how many.
    pub(crate) fn expire_messages(
        &self,
        tenant_id: &str,
        verification_id: &str,
        reason: &str,
    ) -> Result<usize, FlowError> {
        let now = self.clock.now();
        let mut expired = 0;
        for message in self.messages_of(tenant_id, verification_id)? {
            if !matches!(
                message.status,
                DeliveryStatus::Queued | DeliveryStatus::Sent
            ) {
                continue;
            }
            let changed = self.db.update::<MessageRecord, FlowError, bool>(
                Tree::Messages,
                &message_key(tenant_id, verification_id, &message.id),
                |current| {
                    let Some(mut current) = current else {
                        return Ok((None, false));
                    };
                    let changed =
                        current.advance(DeliveryStatus::Expired, now, Some(reason.to_owned()));
                    Ok((Some(current), changed))
                },
            )?;
            if changed {
                expired += 1;
                if let Ok(routing) = self.tenant_routing(tenant_id) {
                    self.replica
                        .routing
                        .ledger
                        .cell(
                            tenant_id,
                            &message.provider_id,
                            message.country.as_deref().unwrap_or("*"),
                        )
                        .stats
                        .lock()
                        .record(&routing.policy, now, Outcome::Undelivered);
                }
            }
        }
        Ok(expired)
    }

    /// `GET|POST /v1/callbacks/{provider_id}`: authenticates the provider's receipt,
    /// lets its adapter parse it, and records each update on its message and
    /// verification. Returns how many updates were recorded.
    pub async fn provider_receipt(
        &self,
        provider_id: &str,
        token: Option<&str>,
        request: CallbackRequest,
    ) -> Result<usize, CallbackError> {
        let tenant_id = self
            .provider_owner(provider_id)?
            .ok_or(CallbackError::Unknown)?;
        let routing = self.tenant_routing(&tenant_id)?;
        let provider = routing
            .providers
            .iter()
            .find(|p| p.id == provider_id)
            .ok_or(CallbackError::Unknown)?;
        // A provider accepts callbacks only with a configured, non-empty token or
        // signing secret, compared in constant time; with neither, none is accepted.
        let scope = crate::secrets::provider_scope(&provider.tenant_id, &provider.id);
        let secrets = self.plugins.secret_box();
        let authentic = match &provider.callback_auth {
            CallbackAuth::Token => {
                let expected = secrets
                    .open_named(&scope, &provider.secrets, "callback_token")
                    .filter(|token| !token.is_empty());
                let given = token
                    .map(str::to_owned)
                    .or_else(|| header(&request, "x-dialgate-token"));
                match (expected, given) {
                    (Some(expected), Some(given)) => {
                        bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
                    }
                    _ => false,
                }
            }
            CallbackAuth::HmacSha256 { header: name } => {
                match (
                    secrets
                        .open_named(&scope, &provider.secrets, "callback_secret")
                        .filter(|secret| !secret.is_empty()),
                    header(&request, name),
                ) {
                    (Some(secret), Some(given)) => signature_ok(&secret, &request.body, &given),
                    _ => false,
                }
            }
        };
        if !authentic {
            return Err(CallbackError::Unauthorized);
        }
        let live = self
            .plugins
            .live(&tenant_id)
            .ok_or(CallbackError::Unknown)?;
        let adapter = live
            .messaging()
            .iter()
            .find(|a| a.name == provider.plugin)
            .ok_or(CallbackError::Unknown)?;
        let call = self.prepared_call(&routing, provider, &live, adapter).call;
        let scope = Scope {
            tenant_id: tenant_id.clone(),
            plugin_id: adapter.plugin_id.clone(),
        };
        let (_, parsed) = self
            .plugins
            .runtime()
            .invoke_parse_callback(
                &adapter.loaded,
                &scope,
                self.clock.now().timestamp_millis(),
                call,
                request,
            )
            .await;
        let updates = parsed.map_err(|failure| CallbackError::Unparsable(failure.to_string()))?;
        let caller = Caller {
            tenant_id: tenant_id.clone(),
            client_ip: String::new(),
        };
        let mut recorded = 0;
        for update in updates {
            let index = key(&[provider_id, &update.provider_message_id]);
            let Some(record_key) = self
                .db
                .get::<String>(Tree::ProviderMessages, &index)
                .map_err(FlowError::from)?
            else {
                tracing::warn!(
                    tenant = tenant_id,
                    provider = provider_id,
                    "receipt for an unknown message {}",
                    update.provider_message_id
                );
                continue;
            };
            let status = DeliveryStatus::from_update(update.status);
            let at = update
                .at_millis
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .unwrap_or_else(|| self.clock.now());
            let reason = update.reason.clone();
            let (record, changed) = self
                .db
                .update::<MessageRecord, FlowError, (Option<MessageRecord>, bool)>(
                    Tree::Messages,
                    record_key.as_bytes(),
                    |current| {
                        let Some(mut current) = current else {
                            return Ok((None, (None, false)));
                        };
                        let changed = current.advance(status, at, reason.clone());
                        Ok((Some(current.clone()), (Some(current), changed)))
                    },
                )
                .map_err(CallbackError::Flow)?;
            let Some(record) = record else {
                continue;
            };
            if changed {
                let outcome = match status {
                    DeliveryStatus::Delivered => Some(Outcome::Delivered {
                        after_ms: u64::try_from((at - record.created_at).num_milliseconds())
                            .unwrap_or(0),
                    }),
                    DeliveryStatus::Failed | DeliveryStatus::Expired => Some(Outcome::Undelivered),
                    _ => None,
                };
                if let Some(outcome) = outcome {
                    self.replica
                        .routing
                        .ledger
                        .cell(
                            &tenant_id,
                            provider_id,
                            record.country.as_deref().unwrap_or("*"),
                        )
                        .stats
                        .lock()
                        .record(&routing.policy, self.clock.now(), outcome);
                }
            }
            let applied = self
                .delivery_update(
                    &caller,
                    &record.verification_id,
                    &record.id,
                    DeliveryRequest {
                        status,
                        reason: update.reason.clone(),
                    },
                )
                .await;
            match applied {
                Ok(_) => {}
                // The receipt beat the send: its verification is not stored yet. It
                // waits on the message until one of the two sides applies it.
                Err(FlowError::NotFound("verification")) => {
                    self.db.update::<MessageRecord, FlowError, ()>(
                        Tree::Messages,
                        record_key.as_bytes(),
                        |current| {
                            let Some(mut current) = current else {
                                return Ok((None, ()));
                            };
                            current.pending_receipts.push(PendingReceipt {
                                status,
                                reason: update.reason.clone(),
                            });
                            Ok((Some(current), ()))
                        },
                    )?;
                    self.apply_pending_receipts(&tenant_id, record_key.as_bytes())
                        .await?;
                }
                Err(err) => return Err(err.into()),
            }
            recorded += 1;
        }
        Ok(recorded)
    }

    /// Records on the verification the receipts that waited on message `record_key`
    /// because they arrived before the send stored it. Both the send (once stored)
    /// and the receipt (once parked) call this; taking the list is one
    /// compare-and-swap, so each receipt is recorded once. Receipts whose
    /// verification still does not exist are put back.
    pub(crate) async fn apply_pending_receipts(
        &self,
        tenant_id: &str,
        record_key: &[u8],
    ) -> Result<(), FlowError> {
        loop {
            let taken = self
                .db
                .update::<MessageRecord, FlowError, Option<MessageRecord>>(
                    Tree::Messages,
                    record_key,
                    |current| match current {
                        Some(mut current) if !current.pending_receipts.is_empty() => {
                            let taken = current.clone();
                            current.pending_receipts.clear();
                            Ok((Some(current), Some(taken)))
                        }
                        other => Ok((other, None)),
                    },
                )?;
            let Some(record) = taken else {
                return Ok(());
            };
            let caller = Caller {
                tenant_id: tenant_id.to_owned(),
                client_ip: String::new(),
            };
            let mut left = Vec::new();
            for pending in record.pending_receipts {
                let applied = self
                    .delivery_update(
                        &caller,
                        &record.verification_id,
                        &record.id,
                        DeliveryRequest {
                            status: pending.status,
                            reason: pending.reason.clone(),
                        },
                    )
                    .await;
                match applied {
                    Ok(_) => {}
                    Err(FlowError::NotFound("verification")) => left.push(pending),
                    Err(err) => return Err(err),
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            self.db.update::<MessageRecord, FlowError, ()>(
                Tree::Messages,
                record_key,
                |current| {
                    let Some(mut current) = current else {
                        return Ok((None, ()));
                    };
                    current.pending_receipts.extend(left.iter().cloned());
                    Ok((Some(current), ()))
                },
            )?;
            // The send may have stored its verification (and looked for waiting
            // receipts) while these were out: then they are applied now.
            let stored = self
                .db
                .get::<crate::model::Verification>(
                    Tree::Verifications,
                    &key(&[tenant_id, &record.verification_id]),
                )?
                .is_some();
            if !stored {
                return Ok(());
            }
        }
    }
}

fn header(request: &CallbackRequest, name: &str) -> Option<String> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_status_is_never_replaced() {
        let at = Utc::now();
        let mut record = MessageRecord {
            id: "m".into(),
            verification_id: "v".into(),
            provider_id: "p".into(),
            provider: "p".into(),
            channel: Channel::Sms,
            to: "+1".into(),
            country: None,
            step: 0,
            attempt: 0,
            status: DeliveryStatus::Queued,
            error: None,
            provider_message_id: None,
            segments: None,
            cost: 0.0,
            latency_ms: None,
            history: vec![],
            created_at: at,
            updated_at: at,
            pending_receipts: Vec::new(),
        };
        assert!(record.advance(DeliveryStatus::Sent, at, None));
        // A late "queued" is recorded, not applied.
        assert!(!record.advance(DeliveryStatus::Queued, at, None));
        assert!(record.advance(DeliveryStatus::Delivered, at, None));
        assert!(!record.advance(DeliveryStatus::Sent, at, None));
        assert!(!record.advance(DeliveryStatus::Failed, at, Some("late".into())));
        assert_eq!(record.status, DeliveryStatus::Delivered);
        assert_eq!(record.history.len(), 5);
        assert_eq!(record.error, None);
    }

    #[test]
    fn signatures_are_checked_over_the_raw_body() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("any key");
        mac.update(b"{\"id\":1}");
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(signature_ok("s3cret", b"{\"id\":1}", &good));
        assert!(signature_ok(
            "s3cret",
            b"{\"id\":1}",
            &format!("sha256={good}")
        ));
        assert!(!signature_ok("s3cret", b"{\"id\":2}", &good));
        assert!(!signature_ok("other", b"{\"id\":1}", &good));
        assert!(!signature_ok("s3cret", b"{\"id\":1}", "zz"));
    }
}
