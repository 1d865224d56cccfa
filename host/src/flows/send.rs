//! `send-otp`: limits, analysis, the `before_send_otp` decision, a fresh code, and
//! delivery through the provider.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::messages;
use crate::model::{ApplicantNumber, AuditEvent, Channel, ReportStatus, Verification};
use crate::otp;
use crate::providers::OutboundMessage;
use crate::settings::EndpointLimits;
use crate::store::{key, Tree};
use crate::warnings::{RiskAction, Warning};

use super::analysis::parse_valid;
use super::idempotency::{fingerprint, Claim, IdempotencyKey};
use super::lookup::check_applicant;
use super::triggers::{Firing, Trigger};
use super::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/send-otp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub phone: String,
    pub applicant_id: Option<String>,
    #[serde(default = "default_channel")]
    pub channel: Channel,
    pub language: Option<String>,
    /// The end user's IP address as the calling app saw it, for per-IP limits.
    pub client_ip: Option<String>,
}

fn default_channel() -> Channel {
    Channel::Sms
}

/// Answer of `POST /v1/phone/send-otp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResponse {
    pub verification_id: String,
    pub phone: String,
    /// `pending` when a code is on its way, `declined` when the number was refused.
    pub status: String,
    pub channel: Channel,
    pub expires_at: Option<DateTime<Utc>>,
    pub resends_remaining: u32,
    pub warnings: Vec<Warning>,
    /// Flags rules set.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Engine {
    /// Sends a code, or replays the first answer for a repeated `Idempotency-Key`.
    pub async fn send_otp(
        &self,
        caller: &Caller,
        request: SendRequest,
        idem: Option<IdempotencyKey>,
    ) -> Result<SendResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let print = fingerprint(&request);
        if let Some(idem) = &idem {
            if let Claim::Replay(answer) = self.claim_idempotency(tenant_id, idem, &print)? {
                return serde_json::from_value(answer)
                    .map_err(|err| FlowError::Provider(err.to_string()));
            }
        }
        let result = self.send_fresh(caller, request).await;
        if let Some(idem) = &idem {
            match &result {
                Ok(answer) => {
                    self.complete_idempotency(tenant_id, idem, &print, answer)?;
                    self.db.sync().await?;
                }
                Err(_) => self.release_idempotency(tenant_id, idem),
            }
        }
        result
    }

    pub(crate) fn check_limits(
        &self,
        tenant_id: &str,
        scope: &str,
        limits: &EndpointLimits,
        e164: &str,
        ip: &str,
    ) -> Result<(), FlowError> {
        let now = self.clock.now();
        for (name, bucket_key, limit) in [
            (
                "tenant",
                format!("{scope}/t/{tenant_id}"),
                limits.per_tenant,
            ),
            (
                "phone number",
                format!("{scope}/p/{tenant_id}/{e164}"),
                limits.per_phone,
            ),
            (
                "client IP",
                format!("{scope}/i/{tenant_id}/{ip}"),
                limits.per_ip,
            ),
        ] {
            self.limits
                .take(&bucket_key, limit, now)
                .map_err(|limited| FlowError::RateLimited {
                    code: "rate_limited",
                    message: format!("too many {scope} requests for this {name}; retry later"),
                    retry_after_secs: limited.retry_after_secs,
                })?;
        }
        Ok(())
    }

    async fn send_fresh(
        &self,
        caller: &Caller,
        request: SendRequest,
    ) -> Result<SendResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        // Checked first, so that nothing is recorded for a send that cannot happen.
        let has_adapters = self
            .plugins
            .live(tenant_id)
            .is_some_and(|live| !live.messaging().is_empty());
        if self.provider.is_none() && !has_adapters {
            return Err(FlowError::Unavailable(
                "no messaging provider is configured for this host".into(),
            ));
        }
        let number = parse_valid(&request.phone, "phone")?;
        let applicant_id = request
            .applicant_id
            .as_deref()
            .map(check_applicant)
            .transpose()?;
        let settings = self.settings(tenant_id)?;
        let ip = request.client_ip.as_deref().unwrap_or(&caller.client_ip);
        self.check_limits(
            tenant_id,
            "send-otp",
            &settings.rate_limits.send_otp,
            &number.e164,
            ip,
        )?;
        let now = self.clock.now();
        let index_key = key(&[tenant_id, &number.e164, applicant_id.unwrap_or("")]);
        let entry: ApplicantNumber = self
            .db
            .get(Tree::VerificationIndex, &index_key)?
            .unwrap_or_default();
        check_resends(&entry.sends, settings.max_resends_per_24h, now)?;

        let line = self.line_signals(tenant_id, &settings, &number.e164).await;
        let analysis = self.analyse(tenant_id, &settings, number, applicant_id, None, line)?;
        let language = messages::resolve_language(
            request.language.as_deref(),
            analysis.facts().region.as_deref(),
        );
        let open: Option<Verification> = match &entry.verification_id {
            Some(id) => self
                .db
                .get::<Verification>(
                    Tree::Verifications,
                    &Engine::verification_key(tenant_id, id),
                )?
                .filter(|verification| verification.status.is_open()),
            None => None,
        };
        let mut verification = open.unwrap_or_else(|| {
            analysis.start_verification(tenant_id, applicant_id, settings.max_otp_attempts, now)
        });
        let mut channel = request.channel;
        verification.phone = analysis.facts();
        verification.risk = analysis.risk.clone();
        verification.warnings = analysis.warnings.clone();
        verification.channel = Some(channel);
        verification.language = language.to_owned();
        verification.updated_at = now;

        let resends = otp::sends_in_window(&entry.sends, now);
        let firing = |trigger| Firing {
            trigger,
            stored: true,
            applicant_country: None,
            resends,
            at: now,
        };
        let mut trail = Vec::new();
        let looked_up = self
            .fire(
                &mut trail,
                firing(Trigger::PhoneLookupComplete),
                None,
                &mut verification,
                &settings,
            )
            .await?;
        let mut blocked = looked_up.blocked;
        if blocked.is_none() {
            let before = self
                .fire(
                    &mut trail,
                    firing(Trigger::BeforeSendOtp),
                    Some(channel.as_str().to_owned()),
                    &mut verification,
                    &settings,
                )
                .await?;
            blocked = before.blocked;
            if let Some(required) = before.otp_channel.or(looked_up.otp_channel) {
                channel = required;
                verification.channel = Some(required);
            }
        }

        if blocked.is_some() || verification.verdict() == RiskAction::Decline {
            self.decline(
                &mut trail,
                firing(Trigger::VerificationCompleted),
                &mut verification,
                &settings,
            )
            .await?;
            verification.events.append(&mut trail);
            self.db.put(
                Tree::Verifications,
                &Engine::verification_key(tenant_id, &verification.id),
                &verification,
            )?;
            self.record_in_index(&index_key, &verification.id, None)?;
            self.emit_outcome(&verification);
            self.db.sync().await?;
            return Ok(SendResponse {
                verification_id: verification.id,
                phone: verification.phone.e164,
                status: "declined".into(),
                channel,
                expires_at: None,
                resends_remaining: 0,
                warnings: verification.warnings,
                flags: verification.flags,
            });
        }

        let code = otp::generate_code(settings.code_length);
        let ttl = Duration::minutes(i64::from(settings.otp_expiry_minutes));
        verification.code.max_attempts = settings.max_otp_attempts;
        verification
            .code
            .issue(&self.hasher, &verification.id, &code, now, ttl);
        let message = OutboundMessage {
            tenant_id: tenant_id.to_owned(),
            verification_id: verification.id.clone(),
            phone: verification.phone.e164.clone(),
            channel,
            language: language.to_owned(),
            body: messages::code_message(language, &code, settings.otp_expiry_minutes),
            code,
            created_at: now,
        };
        let dispatch = self
            .dispatch(message, verification.route.as_deref())
            .await?;
        self.fire(
            &mut trail,
            firing(Trigger::OtpSent),
            Some(format!("{} {}", dispatch.provider, dispatch.message_id)),
            &mut verification,
            &settings,
        )
        .await?;
        if verification.verdict() == RiskAction::Decline {
            // A rule declined after the code went out: the code is withdrawn.
            self.decline(
                &mut trail,
                firing(Trigger::VerificationCompleted),
                &mut verification,
                &settings,
            )
            .await?;
        }
        let verification = self.store_sent(verification, trail)?;
        let sends = self.record_in_index(&index_key, &verification.id, Some(now))?;
        self.emit_webhook(crate::webhooks::EventType::Sent, &verification);
        self.emit_outcome(&verification);
        self.db.sync().await?;
        let resends = otp::sends_in_window(&sends, now).saturating_sub(1);
        let declined = verification.status == ReportStatus::Declined;
        Ok(SendResponse {
            verification_id: verification.id,
            phone: verification.phone.e164,
            status: if declined { "declined" } else { "pending" }.into(),
            channel,
            expires_at: verification.code.active.map(|code| code.expires_at),
            resends_remaining: settings.max_resends_per_24h.saturating_sub(resends),
            warnings: verification.warnings,
            flags: verification.flags,
        })
    }

    /// Declines the verification (withdrawing any code) and fires
    /// `verification_completed` with the reasons.
    async fn decline(
        &self,
        trail: &mut Vec<AuditEvent>,
        completed: Firing<'_>,
        verification: &mut Verification,
        settings: &crate::settings::PhoneSettings,
    ) -> Result<(), FlowError> {
        verification.status = ReportStatus::Declined;
        verification.code.active = None;
        let reasons = decline_reasons(verification);
        self.fire(trail, completed, Some(reasons), verification, settings)
            .await?;
        Ok(())
    }

    /// Stores a verification whose code was just sent, with the triggers this request
    /// fired. The write comes after the provider accepted the message, so the code is
    /// only stored once it is on its way; a crash in between leaves the user a code
    /// that does not verify, and the client, which got no answer, sends again. A
    /// concurrent check of the same verification may have counted attempts meanwhile;
    /// those are kept, and a verification that closed meanwhile is not reopened.
    fn store_sent(
        &self,
        prepared: Verification,
        trail: Vec<AuditEvent>,
    ) -> Result<Verification, FlowError> {
        let key = Engine::verification_key(&prepared.tenant_id, &prepared.id);
        if prepared.sends == 0 {
            // A verification started by this request: nobody else knows its id yet.
            let mut fresh = prepared.clone();
            fresh.sends = 1;
            fresh.events.extend(trail.iter().cloned());
            if self.db.insert_new(Tree::Verifications, &key, &fresh)? {
                return Ok(fresh);
            }
        }
        self.db.update::<Verification, FlowError, Verification>(
            Tree::Verifications,
            &key,
            |current| {
                let mut next = prepared.clone();
                match current {
                    Some(current) if !current.status.is_open() => {
                        return Err(FlowError::Conflict {
                            code: "verification_closed",
                            message: format!(
                                "the verification was completed meanwhile with status {:?}",
                                current.status
                            ),
                        })
                    }
                    Some(current) => {
                        next.code.attempts = current.code.attempts;
                        next.sends = current.sends + 1;
                        next.events = current.events;
                    }
                    None => next.sends = 1,
                }
                next.events.extend(trail.iter().cloned());
                Ok((Some(next.clone()), next))
            },
        )
    }

    /// Points the number and applicant at `verification_id` and, for a sent code,
    /// records the send; returns the sends of the last 24 hours.
    pub(crate) fn record_in_index(
        &self,
        index_key: &[u8],
        verification_id: &str,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<DateTime<Utc>>, FlowError> {
        self.db
            .update::<ApplicantNumber, FlowError, Vec<DateTime<Utc>>>(
                Tree::VerificationIndex,
                index_key,
                |current| {
                    let mut entry = current.unwrap_or_default();
                    entry.verification_id = Some(verification_id.to_owned());
                    if let Some(at) = sent_at {
                        entry.sends.retain(|sent| *sent > at - Duration::hours(24));
                        entry.sends.push(at);
                    }
                    let sends = entry.sends.clone();
                    Ok((Some(entry), sends))
                },
            )
    }
}

/// Why a verification was declined: the declining warnings' tags and rules' reasons.
fn decline_reasons(verification: &Verification) -> String {
    let warnings = verification
        .warnings
        .iter()
        .filter(|w| w.action == RiskAction::Decline)
        .map(|w| w.risk.tag().to_owned());
    let decisions = verification
        .decisions
        .iter()
        .filter(|d| d.action == RiskAction::Decline)
        .map(|d| {
            format!(
                "{}: {}",
                d.plugin,
                d.reason.as_deref().unwrap_or("declined")
            )
        });
    warnings.chain(decisions).collect::<Vec<_>>().join(",")
}

/// Refuses a send beyond the resend limit: every send after the first within 24 hours
/// is a resend.
fn check_resends(
    sends: &[DateTime<Utc>],
    max_resends: u32,
    now: DateTime<Utc>,
) -> Result<(), FlowError> {
    if otp::sends_in_window(sends, now) <= max_resends {
        return Ok(());
    }
    let oldest = sends
        .iter()
        .filter(|at| **at > now - Duration::hours(24))
        .min()
        .copied()
        .unwrap_or(now);
    let retry = (oldest + Duration::hours(24) - now).num_seconds().max(1);
    Err(FlowError::RateLimited {
        code: "resend_limit_exceeded",
        message: format!(
            "at most {max_resends} code resends per 24 hours for this number and applicant"
        ),
        retry_after_secs: u64::try_from(retry).unwrap_or(1),
    })
}
