//! `send-otp`: limits, analysis, the `before_send_otp` decision, a fresh code, its
//! text, and delivery through routing; the steps of a channel workflow (the first
//! that can be sent goes out at once, later ones when the code is not verified in
//! time, run by the scheduled-jobs worker).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::messages;
use crate::model::{
    ApplicantNumber, AuditEvent, Channel, ChannelWorkflow, CodeMessage, MessageChoice,
    ReportStatus, SentCode, StepOutcome, Verification, WorkflowStep,
};
use crate::otp;
use crate::routing::RuleRoute;
use crate::sending::OutboundMessage;
use crate::settings::EndpointLimits;
use crate::store::Tree;
use crate::warnings::{Risk, RiskAction, Warning};

use crate::analytics::Fact;
use crate::flows::analytics::groups_of;
use crate::flows::jobs::Job;
use crate::flows::lookup::{check_applicant, client_ip};
use crate::flows::messaging::routed::message_key;
use crate::flows::messaging::templates::MessagePlan;
use crate::flows::pumping::{pumping_refusal, pumping_warning, Verdict};
use crate::flows::rules::triggers::{Firing, Trigger};
use crate::flows::verification::analysis::{parse_country, parse_valid};
use crate::flows::verification::idempotency::{fingerprint, Claim, IdempotencyKey};
use crate::flows::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/send-otp`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub phone: String,
    pub applicant_id: Option<String>,
    #[serde(default = "default_channel")]
    pub channel: Channel,
    pub language: Option<String>,
    /// The end user's IP address as the calling app saw it, for per-IP limits.
    pub client_ip: Option<String>,
    /// An ordered fallback of channels: each step's code goes out only if the code
    /// was not verified within the previous step's `timeout_seconds`.
    #[serde(default)]
    pub workflow: Option<Vec<WorkflowStep>>,
    /// The message's choice (see `flows/messaging/templates.rs`): `locale` is an alias of
    /// `language`; the brand and template are the tenant's; `app_hash` overrides the
    /// brand's.
    pub locale: Option<String>,
    pub brand_id: Option<String>,
    pub template_id: Option<String>,
    pub app_hash: Option<String>,
    /// The applicant's country (ISO alpha-2 or alpha-3), for the risk score
    /// (`country_mismatch`) and the rules, as on lookup. Left out of the
    /// idempotency fingerprint when absent, so earlier fingerprints still match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicant_country: Option<String>,
}

/// Steps a channel workflow may have.
pub const MAX_WORKFLOW_STEPS: usize = 5;

/// The send's steps: its workflow, checked, or its one channel.
fn workflow_steps(request: &SendRequest) -> Result<Vec<WorkflowStep>, FlowError> {
    let Some(steps) = &request.workflow else {
        return Ok(vec![WorkflowStep {
            channel: request.channel,
            timeout_seconds: 0,
        }]);
    };
    if steps.is_empty() || steps.len() > MAX_WORKFLOW_STEPS {
        return Err(FlowError::invalid(
            "workflow",
            format!("1 to {MAX_WORKFLOW_STEPS} steps"),
        ));
    }
    for (at, step) in steps.iter().enumerate() {
        if !(1..=900).contains(&step.timeout_seconds) {
            return Err(FlowError::invalid(
                format!("workflow[{at}].timeout_seconds"),
                "must be between 1 and 900",
            ));
        }
    }
    if request.channel != Channel::Sms && request.channel != steps[0].channel {
        return Err(FlowError::invalid(
            "channel",
            "contradicts workflow[0].channel; give the channels in the workflow only",
        ));
    }
    Ok(steps.clone())
}

/// The error of a step whose destination the tenant's delivery permissions refuse.
fn not_permitted(why: String) -> FlowError {
    FlowError::Conflict {
        code: "destination_not_permitted",
        message: format!("the delivery permissions refuse this destination: {why}"),
    }
}

fn default_channel() -> Channel {
    Channel::Sms
}

/// Answer of `POST /v1/phone/send-otp`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendResponse {
    pub verification_id: String,
    pub phone: String,
    /// `pending` when a code is on its way, `declined` when the number was refused,
    /// `in_review` when an earlier decision for this number and applicant awaits a
    /// person (nothing is sent then).
    pub status: String,
    #[schema(value_type = String)]
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
        // Buckets name the number and the IP address hashed: a shared store keeps
        // them in a table.
        let scopes = [
            (
                "tenant",
                format!("{scope}/t/{tenant_id}"),
                limits.per_tenant,
            ),
            (
                "phone number",
                format!(
                    "{scope}/p/{tenant_id}/{}",
                    self.db.personal_name(tenant_id, &[e164])?
                ),
                limits.per_phone,
            ),
            (
                "client IP",
                format!(
                    "{scope}/i/{tenant_id}/{}",
                    self.db.personal_name(tenant_id, &[ip])?
                ),
                limits.per_ip,
            ),
        ];
        let buckets = scopes
            .iter()
            .map(|(_, key, limit)| (key.as_str(), *limit))
            .collect::<Vec<_>>();
        self.limits
            .take_all(&buckets, now)?
            .map_err(|(at, limited)| FlowError::RateLimited {
                code: "rate_limited",
                message: format!(
                    "too many {scope} requests for this {}; retry later",
                    scopes[at].0
                ),
                retry_after_secs: limited.retry_after_secs,
            })
    }

    async fn send_fresh(
        &self,
        caller: &Caller,
        request: SendRequest,
    ) -> Result<SendResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        // Checked first, so that nothing is recorded for a send that cannot happen.
        if self.sender.is_none() && !self.can_send(tenant_id)? {
            return Err(FlowError::Unavailable(self.no_sender_reason(tenant_id)));
        }
        let number = parse_valid(&request.phone, "phone")?;
        let steps = workflow_steps(&request)?;
        let applicant_id = request
            .applicant_id
            .as_deref()
            .map(check_applicant)
            .transpose()?;
        let applicant_country =
            parse_country(request.applicant_country.as_deref(), "applicant_country")?;
        let ip = client_ip(request.client_ip.as_deref(), &caller.client_ip)?;
        let plan = self.plan_code_message(tenant_id, &request, &number.e164)?;
        let settings = self.settings(tenant_id)?;
        self.check_limits(
            tenant_id,
            "send-otp",
            &settings.rate_limits.send_otp,
            &number.e164,
            &ip,
        )?;
        let now = self.clock.now();
        let index_key =
            self.db
                .applicant_key(tenant_id, &number.e164, applicant_id.unwrap_or(""))?;
        // A decision made for this number and applicant (by a lookup, a rule, a
        // reviewer) holds: the send answers it and sends nothing.
        let entry: Option<ApplicantNumber> = self.db.get(Tree::VerificationIndex, &index_key)?;
        if let Some(held) = self.held_decision_of(tenant_id, entry.as_ref())? {
            return Ok(held_answer(held, steps[0].channel));
        }
        // Codes that cannot be entered are not sent.
        if let Some(until) = self.guess_lock(tenant_id, &number.e164, settings.guess_budget, now)? {
            return Err(crate::flows::verification::verify::guess_locked(
                settings.guess_budget,
                until,
                now,
            ));
        }
        let entry = entry.unwrap_or_default();
        check_resends(&entry.sends, settings.max_resends_per_24h, now)?;

        let line = self.line_signals(tenant_id, &settings, &number.e164).await;
        let analysis = self.analyse(
            tenant_id,
            &settings,
            number,
            applicant_id,
            applicant_country.as_deref(),
            line,
        )?;
        let language =
            messages::resolve_language(plan.locale(), analysis.facts().region.as_deref());
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
        let starting = open.is_none();
        let mut verification = open.unwrap_or_else(|| {
            analysis.start_verification(tenant_id, applicant_id, settings.max_otp_attempts, now)
        });
        let mut channel = steps[0].channel;
        verification.phone = analysis.facts();
        verification.risk = analysis.risk.clone();
        // A resend analyses the number afresh, but the guess budget's lock stays on
        // the report: a new code does not undo the guessing.
        let locked = verification
            .warnings
            .iter()
            .filter(|w| w.risk == Risk::VerificationCodeGuessBudgetExhausted)
            .cloned()
            .collect::<Vec<_>>();
        verification.warnings = analysis.warnings.clone();
        verification.warnings.extend(locked);
        verification.applicant_country = applicant_country.clone();
        verification.channel = Some(channel);
        verification.language = language.to_owned();
        verification.updated_at = now;

        let resends = otp::sends_in_window(&entry.sends, now);
        let firing = |trigger| Firing {
            trigger,
            stored: true,
            applicant_country: applicant_country.as_deref(),
            resends,
            at: now,
        };
        // The SMS-pumping detector's view of the number, which the rules see as fraud
        // signals; it acts on it after them.
        let assessment = self.assess_pumping(&verification, &settings)?;
        let geo_permitted = settings
            .delivery_permissions
            .refusal(&verification.phone, channel)
            .is_none();
        verification.fraud = assessment.signals(geo_permitted);
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

        // Where the tenant allows codes to go, on the channel the rules left: a refused
        // destination is declined before any provider is asked.
        if let Some(why) = settings
            .delivery_permissions
            .refusal(&verification.phone, channel)
        {
            verification.warnings.push(Warning::new(
                Risk::DestinationNotPermitted,
                RiskAction::Decline,
                Some(why),
            ));
        }

        // The SMS-pumping detector: a prefix it judges under attack declines the send
        // (in monitor mode, only marks it).
        if blocked.is_none() && verification.verdict() != RiskAction::Decline {
            if let Verdict::Blocked(block, case) =
                self.apply_pumping(assessment, &verification, &settings, channel)?
            {
                if block.enforced {
                    let saved = self.cost_estimate(tenant_id, &verification.phone, channel);
                    self.tally_verification(
                        &verification,
                        Fact::FraudBlocked {
                            saved: crate::spend::to_micros(saved),
                        },
                    );
                }
                verification.warnings.push(pumping_warning(&block));
                verification.cases.extend(case);
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
            if starting {
                self.tally_verification(&verification, Fact::Started);
            }
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

        // The steps of the channel workflow are tried in order until one is sent: a
        // step no provider can carry moves on to the next at once.
        let mut steps = steps;
        steps[0].channel = channel;
        let mut outcomes = Vec::new();
        let mut current = 0;
        let (code, dispatch) = loop {
            let step = steps[current];
            // A later step's channel may be one the permissions refuse: it moves on.
            if let Some(why) = settings
                .delivery_permissions
                .refusal(&verification.phone, step.channel)
            {
                let err = not_permitted(why);
                if current + 1 < steps.len() {
                    outcomes.push(step_outcome(current, step.channel, now, Err(&err)));
                    current += 1;
                    continue;
                }
                return Err(err);
            }
            let code = otp::generate_code(settings.code_length);
            let (message, record) =
                self.code_message(&plan, &verification, step.channel, &code, &settings, now)?;
            // The code's cost is reserved against the tenant's budgets first.
            let sent = self
                .dispatch_paid(
                    &settings,
                    &verification,
                    step.channel,
                    message,
                    u32::try_from(current).unwrap_or(0),
                )
                .await;
            match sent {
                Ok(dispatch) => {
                    outcomes.push(step_outcome(current, step.channel, now, Ok(&dispatch)));
                    verification.note_sent(sent_code(&dispatch, step.channel, &record, now));
                    verification.message = Some(record);
                    break (code, dispatch);
                }
                Err(err) if current + 1 < steps.len() => {
                    outcomes.push(step_outcome(current, step.channel, now, Err(&err)));
                    current += 1;
                }
                Err(err) => return Err(err),
            }
        };
        channel = steps[current].channel;
        verification.channel = Some(channel);
        let ttl = Duration::minutes(i64::from(settings.otp_expiry_minutes));
        verification.code.max_attempts = settings.max_otp_attempts;
        verification
            .code
            .issue(&self.hasher, &verification.id, &code, now, ttl);
        let next_step = (current + 1 < steps.len())
            .then(|| now + Duration::seconds(i64::from(steps[current].timeout_seconds)));
        verification.channel_workflow = (steps.len() > 1).then(|| ChannelWorkflow {
            steps: steps.clone(),
            current: u32::try_from(current).unwrap_or(0),
            outcomes,
            next_step_at: next_step,
            choice: MessageChoice {
                locale: request.locale.clone().or(request.language.clone()),
                brand_id: request.brand_id.clone(),
                template_id: request.template_id.clone(),
                app_hash: request.app_hash.clone(),
            },
        });
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
        self.pumping_sent(tenant_id, &settings, &verification.phone);
        let resend = verification.sends > 1;
        if !resend {
            self.tally_verification(&verification, Fact::Started);
        }
        self.tally(
            tenant_id,
            now,
            groups_of(&verification, verification.sent.last()),
            Fact::Sent {
                resend,
                cost: crate::spend::to_micros(dispatch.cost),
            },
        );
        // Receipts that beat this write wait on the message; record them now.
        if dispatch.routed {
            self.apply_pending_receipts(
                tenant_id,
                &message_key(tenant_id, &verification.id, &dispatch.message_id),
            )
            .await?;
        }
        if verification.status.is_open() {
            if let Some(at) = next_step {
                self.schedule(
                    &Job::FallbackStep {
                        tenant_id: tenant_id.to_owned(),
                        verification_id: verification.id.clone(),
                        step: u32::try_from(current + 1).unwrap_or(u32::MAX),
                    },
                    at,
                )?;
            }
            // Only routed sends keep message records to expire.
            if let Some(code) = verification
                .code
                .active
                .as_ref()
                .filter(|_| dispatch.routed)
            {
                self.schedule(
                    &Job::ExpireMessages {
                        tenant_id: tenant_id.to_owned(),
                        verification_id: verification.id.clone(),
                    },
                    code.expires_at,
                )?;
            }
        }
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
                        // The message this send added, after those sent meanwhile.
                        next.sent = current.sent;
                        if let Some(sent) = prepared.sent.last() {
                            next.note_sent(sent.clone());
                        }
                    }
                    None => next.sends = 1,
                }
                next.events.extend(trail.iter().cloned());
                Ok((Some(next.clone()), next))
            },
        )
    }

    /// The code message for `verification` on `channel`, rendered from `plan`, and
    /// what the report tells about it.
    fn code_message(
        &self,
        plan: &MessagePlan,
        verification: &Verification,
        channel: Channel,
        code: &str,
        settings: &crate::settings::PhoneSettings,
        now: DateTime<Utc>,
    ) -> Result<(OutboundMessage, CodeMessage), FlowError> {
        let text = plan.render(
            &verification.language,
            verification.phone.region.as_deref(),
            channel,
            code,
            settings.otp_expiry_minutes,
        )?;
        let message = OutboundMessage {
            tenant_id: verification.tenant_id.clone(),
            verification_id: verification.id.clone(),
            phone: verification.phone.e164.clone(),
            channel,
            language: text.record.locale.clone(),
            body: text.body,
            code: code.to_owned(),
            created_at: now,
        };
        Ok((message, text.record))
    }

    /// Starts step `step` of a verification's channel workflow, unless its code was
    /// verified, the verification closed, or the step already ran. Returns what the
    /// step did, `None` when it had nothing to do.
    pub(crate) async fn send_step(
        &self,
        tenant_id: &str,
        verification_id: &str,
        step: u32,
    ) -> Result<Option<StepOutcome>, FlowError> {
        let key = Engine::verification_key(tenant_id, verification_id);
        let Some(verification) = self.db.get::<Verification>(Tree::Verifications, &key)? else {
            return Ok(None);
        };
        let due = |v: &Verification| {
            v.status.is_open()
                && !v.otp_verified
                && v.channel_workflow
                    .as_ref()
                    .is_some_and(|w| w.current < step && (step as usize) < w.steps.len())
        };
        if !due(&verification) {
            return Ok(None);
        }
        let Some(workflow) = verification.channel_workflow.clone() else {
            return Ok(None);
        };
        let settings = self.settings(tenant_id)?;
        let now = self.clock.now();
        let channel = workflow.steps[step as usize].channel;
        let code = otp::generate_code(settings.code_length);
        let choice = &workflow.choice;
        let again = SendRequest {
            phone: verification.phone.e164.clone(),
            applicant_id: None,
            channel,
            language: None,
            client_ip: None,
            workflow: None,
            locale: choice.locale.clone(),
            brand_id: choice.brand_id.clone(),
            template_id: choice.template_id.clone(),
            app_hash: choice.app_hash.clone(),
            applicant_country: None,
        };
        let rendered = self
            .plan_code_message(tenant_id, &again, &verification.phone.e164)
            .and_then(|plan| {
                self.code_message(&plan, &verification, channel, &code, &settings, now)
            });
        let (message, record) = match rendered {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::warn!(tenant = tenant_id, "fallback step {step}: {err}");
                return Err(err);
            }
        };
        let refused = match settings
            .delivery_permissions
            .refusal(&verification.phone, channel)
        {
            Some(why) => Some(not_permitted(why)),
            None => self
                .active_pumping_block(tenant_id, &settings, &verification.phone)?
                .map(|block| pumping_refusal(&block)),
        };
        let sent = match refused {
            Some(err) => Err(err),
            None => {
                self.dispatch_paid(&settings, &verification, channel, message, step)
                    .await
            }
        };
        let outcome = step_outcome(step as usize, channel, now, sent.as_ref());
        let last = step as usize + 1 >= workflow.steps.len();
        let next_at = (sent.is_ok() && !last).then(|| {
            now + Duration::seconds(i64::from(workflow.steps[step as usize].timeout_seconds))
        });
        let ttl = Duration::minutes(i64::from(settings.otp_expiry_minutes));
        let stored = self
            .db
            .update::<Verification, FlowError, Option<Verification>>(
                Tree::Verifications,
                &key,
                |current| {
                    let Some(mut current) = current else {
                        return Ok((None, None));
                    };
                    if !due(&current) {
                        return Ok((Some(current), None));
                    }
                    let Some(flow) = current.channel_workflow.as_mut() else {
                        return Ok((Some(current), None));
                    };
                    flow.outcomes.push(outcome.clone());
                    flow.next_step_at = next_at;
                    if let Ok(dispatch) = &sent {
                        flow.current = step;
                        current.channel = Some(channel);
                        current.note_sent(sent_code(dispatch, channel, &record, now));
                        current.message = Some(record.clone());
                        current
                            .code
                            .issue(&self.hasher, &current.id, &code, now, ttl);
                        current.sends += 1;
                    }
                    current.updated_at = now;
                    current.events.push(AuditEvent {
                        at: now,
                        trigger: "channel_fallback".into(),
                        status: current.status,
                        detail: Some(format!(
                            "step {step} on {}: {}{}",
                            channel.as_str(),
                            outcome.status,
                            outcome
                                .error
                                .as_deref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        )),
                        rules: Vec::new(),
                    });
                    Ok((Some(current.clone()), Some(current)))
                },
            )?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        if let Ok(dispatch) = &sent {
            self.pumping_sent(tenant_id, &settings, &stored.phone);
            self.tally(
                tenant_id,
                now,
                groups_of(&stored, stored.sent.last()),
                Fact::Sent {
                    resend: true,
                    cost: crate::spend::to_micros(dispatch.cost),
                },
            );
        }
        if let Some(message_id) = outcome
            .message_id
            .as_ref()
            .filter(|_| sent.as_ref().is_ok_and(|dispatch| dispatch.routed))
        {
            self.apply_pending_receipts(
                tenant_id,
                &message_key(tenant_id, verification_id, message_id),
            )
            .await?;
        }
        if let Some(at) = next_at {
            self.schedule(
                &Job::FallbackStep {
                    tenant_id: tenant_id.to_owned(),
                    verification_id: verification_id.to_owned(),
                    step: step + 1,
                },
                at,
            )?;
        }
        if sent.is_ok() {
            self.emit_webhook(crate::webhooks::EventType::Sent, &stored);
            let routed = sent.as_ref().is_ok_and(|dispatch| dispatch.routed);
            if let Some(code) = stored.code.active.as_ref().filter(|_| routed) {
                self.schedule(
                    &Job::ExpireMessages {
                        tenant_id: tenant_id.to_owned(),
                        verification_id: verification_id.to_owned(),
                    },
                    code.expires_at,
                )?;
            }
        }
        self.db.sync().await?;
        Ok(Some(outcome))
    }

    /// Sends `message` through the tenant's dispatch once its estimated cost is
    /// reserved against the tenant's budgets (a spent budget refuses it), and settles
    /// the reservation to what the message cost.
    async fn dispatch_paid(
        &self,
        settings: &crate::settings::PhoneSettings,
        verification: &Verification,
        channel: Channel,
        message: OutboundMessage,
        step: u32,
    ) -> Result<crate::sending::Dispatch, FlowError> {
        let reservation = self.reserve_spend(
            &verification.tenant_id,
            settings,
            &verification.phone,
            channel,
        )?;
        let sent = self
            .dispatch(
                message,
                verification.phone.region.as_deref(),
                &RuleRoute {
                    forced: verification.route.as_deref(),
                    forbidden: &verification.avoided_routes,
                },
                step,
            )
            .await;
        self.settle_spend(reservation, sent.as_ref().map_or(0.0, |d| d.cost))?;
        sent
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

/// The answer to a send for a number and applicant whose decision holds.
/// What analytics keeps of a code message `dispatch` sent on `channel`.
fn sent_code(
    dispatch: &crate::sending::Dispatch,
    channel: Channel,
    record: &CodeMessage,
    at: DateTime<Utc>,
) -> SentCode {
    SentCode {
        message_id: dispatch.message_id.clone(),
        at,
        channel,
        provider: dispatch.provider.clone(),
        template_id: record.template_id.clone(),
        locale: record.locale.clone(),
    }
}

fn held_answer(held: Verification, channel: Channel) -> SendResponse {
    let status = if held.status == ReportStatus::InReview {
        "in_review"
    } else {
        "declined"
    };
    SendResponse {
        verification_id: held.id,
        phone: held.phone.e164,
        status: status.into(),
        channel: held.channel.unwrap_or(channel),
        expires_at: None,
        resends_remaining: 0,
        warnings: held.warnings,
        flags: held.flags,
    }
}

/// What a started step did.
fn step_outcome(
    step: usize,
    channel: Channel,
    at: DateTime<Utc>,
    sent: Result<&crate::sending::Dispatch, &FlowError>,
) -> StepOutcome {
    let step = u32::try_from(step).unwrap_or(u32::MAX);
    match sent {
        Ok(dispatch) => StepOutcome {
            step,
            channel,
            at,
            status: "sent".into(),
            provider: Some(dispatch.provider.clone()),
            message_id: Some(dispatch.message_id.clone()),
            error: None,
        },
        Err(err) => StepOutcome {
            step,
            channel,
            at,
            status: "failed".into(),
            provider: None,
            message_id: None,
            error: Some(err.to_string()),
        },
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
