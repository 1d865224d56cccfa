//! `verify-otp`: check a submitted code and settle the verification.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    ApplicantNumber, AuditEvent, GuessFailure, GuessLog, ReportStatus, Verification, VerifiedOwner,
};
use crate::otp::CheckOutcome;
use crate::phone::risk::RiskLevel;
use crate::settings::{GuessBudget, PhoneSettings};
use crate::store::Tree;
use crate::warnings::{Risk, RiskAction, Warning};

use crate::flows::lookup::{check_applicant, client_ip};
use crate::flows::rules::triggers::{Firing, Trigger};
use crate::flows::verification::analysis::parse_valid;
use crate::flows::{Caller, Engine, FlowError};

/// Body of `POST /v1/phone/verify-otp`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub phone: String,
    pub code: String,
    pub applicant_id: Option<String>,
    /// The end user's IP address as the calling app saw it, for per-IP limits.
    pub client_ip: Option<String>,
}

/// The `phone_intelligence` block of a successful check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhoneIntelligence {
    #[serde(rename = "type")]
    pub line_type: &'static str,
    pub carrier: Option<String>,
    pub country: Option<String>,
    pub risk_score: u8,
    /// `low`, `medium` or `high`.
    #[schema(value_type = String)]
    pub risk_level: RiskLevel,
}

/// Answer of `POST /v1/phone/verify-otp`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    pub phone: String,
    /// `verified`, `incorrect_code`, `attempts_exceeded` or `expired`.
    pub verification_status: &'static str,
    pub verification_id: String,
    /// The report status after this check.
    #[schema(value_type = String)]
    pub status: ReportStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_intelligence: Option<PhoneIntelligence>,
    /// Code entries left after a wrong code (0 once they are exhausted); absent when
    /// the check verified or the code had expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_remaining: Option<u32>,
    pub warnings: Vec<Warning>,
}

impl Engine {
    /// Checks a code against the open verification of the number and applicant.
    pub async fn verify_otp(
        &self,
        caller: &Caller,
        request: VerifyRequest,
    ) -> Result<VerifyResponse, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let number = parse_valid(&request.phone, "phone")?;
        let applicant_id = request
            .applicant_id
            .as_deref()
            .map(check_applicant)
            .transpose()?;
        let code = request.code.trim();
        let length_ok =
            u8::try_from(code.len()).is_ok_and(|len| crate::otp::CODE_LENGTH_RANGE.contains(&len));
        if !length_ok || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FlowError::invalid("code", "must be 4 to 10 digits"));
        }
        let ip = client_ip(request.client_ip.as_deref(), &caller.client_ip)?;
        let settings = self.settings(tenant_id)?;
        self.check_limits(
            tenant_id,
            "verify-otp",
            &settings.rate_limits.verify_otp,
            &number.e164,
            &ip,
        )?;
        let index_key =
            self.db
                .applicant_key(tenant_id, &number.e164, applicant_id.unwrap_or(""))?;
        let entry: Option<ApplicantNumber> = self.db.get(Tree::VerificationIndex, &index_key)?;
        let id = entry
            .and_then(|entry| entry.verification_id)
            .ok_or(FlowError::NotFound(
                "verification for this phone number and applicant",
            ))?;
        let now = self.clock.now();
        // The entry is charged to the number's guess budget before its code is checked,
        // so that concurrent entries cannot all pass a budget with one guess left.
        let budget = settings.guess_budget;
        let charge = match self.charge_guess(tenant_id, &number.e164, budget, now)? {
            Ok(charge) => charge,
            Err(until) => {
                self.note_guess_lock(tenant_id, &id, &settings, until, now)?;
                self.db.sync().await?;
                return Err(guess_locked(budget, until, now));
            }
        };
        let locks = charge.last.then(|| {
            guess_warning(
                &settings,
                budget,
                now + Duration::minutes(i64::from(budget.lockout_minutes)),
            )
        });
        // A number verified for another applicant meanwhile is a duplicate now.
        let duplicate = self.duplicate_warning(tenant_id, &settings, &number.e164, applicant_id)?;
        // Without a rule on the check's triggers, the rule phase is its audit trail and
        // the settling alone, which go into the check's own write: one write, not two.
        let rules_after_check = self.plugins.live(tenant_id).is_some_and(|live| {
            [
                Trigger::OtpVerified,
                Trigger::OtpFailed,
                Trigger::VerificationCompleted,
            ]
            .into_iter()
            .any(|trigger| live.has_rules(trigger))
        });

        let checked = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, &id),
            |current| {
                let mut verification = current.ok_or(FlowError::NotFound("verification"))?;
                if !verification.status.is_open() {
                    return Err(FlowError::Conflict {
                        code: "verification_closed",
                        message: format!(
                            "the verification is already completed with status {}; send a new code to start another",
                            status_name(verification.status)
                        ),
                    });
                }
                // When the code being checked was sent (its expiry less its lifetime).
                let sent = verification.code.active.as_ref().map(|active| {
                    active.expires_at - Duration::minutes(i64::from(settings.otp_expiry_minutes))
                });
                let outcome = verification.code.check(&self.hasher, &verification.id, code, now);
                verification.updated_at = now;
                match outcome {
                    CheckOutcome::Verified => {
                        verification.otp_verified = true;
                        verification.verified_at = Some(now);
                        if let Some(warning) = duplicate.clone() {
                            if !verification.warnings.iter().any(|w| w.risk == warning.risk) {
                                verification.warnings.push(warning);
                            }
                        }
                        verification.status = verification.final_status();
                    }
                    CheckOutcome::AttemptsExceeded => {
                        verification.status = ReportStatus::Declined;
                        verification.warnings.push(Warning::new(
                            Risk::VerificationCodeAttemptsExceeded,
                            RiskAction::Decline,
                            Some(format!("{} attempts", verification.code.attempts)),
                        ));
                    }
                    CheckOutcome::Incorrect { .. } | CheckOutcome::Expired | CheckOutcome::NoActiveCode => {}
                }
                // This wrong code spent the number's last guess: code entry is locked.
                if let (Some(warning), CheckOutcome::Incorrect { .. } | CheckOutcome::AttemptsExceeded) =
                    (&locks, outcome)
                {
                    add_warning(&mut verification, warning.clone());
                }
                if !rules_after_check {
                    audit_without_rules(&mut verification, outcome, now);
                }
                Ok((Some(verification.clone()), (verification, outcome, sent)))
            },
        );
        let budget_key = self.db.number_key(tenant_id, &number.e164)?;
        let (verification, outcome, sent) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                self.refund_guess(&budget_key, charge.ticket)?;
                return Err(err);
            }
        };
        match outcome {
            // A correct entry clears the count.
            CheckOutcome::Verified => {
                self.db.remove(Tree::GuessBudgets, &budget_key)?;
                let first_sent = verification
                    .sent
                    .first()
                    .map_or(verification.created_at, |sent| sent.at);
                self.tally_verification(
                    &verification,
                    crate::analytics::Fact::Verified {
                        after_ms: (now - first_sent).num_milliseconds(),
                    },
                );
                // The conversion the SMS-pumping detector counts per prefix.
                if let Some(sent) = sent {
                    self.pumping_converted(tenant_id, &settings, &verification.phone, sent);
                }
            }
            CheckOutcome::Incorrect { .. } | CheckOutcome::AttemptsExceeded => {}
            // No code was compared.
            CheckOutcome::Expired | CheckOutcome::NoActiveCode => {
                self.refund_guess(&budget_key, charge.ticket)?;
            }
        }

        let label = label_of(outcome);
        let verification = if rules_after_check {
            self.rule_phase(tenant_id, &id, &settings, verification, outcome, now)
                .await?
        } else {
            // A tenant without rules still counts as active, so the others' CPU
            // budgets apply while it is served (as a firing without rules notes it).
            self.plugins.runtime().admission().note(tenant_id);
            verification
        };
        if outcome == CheckOutcome::Verified && verification.status != ReportStatus::Declined {
            self.record_owner(tenant_id, &verification)?;
        }
        self.emit_outcome(&verification);
        if label == "expired" {
            self.emit_webhook(crate::webhooks::EventType::Expired, &verification);
        }
        self.db.sync().await?;

        let verified = outcome == CheckOutcome::Verified;
        Ok(VerifyResponse {
            phone: verification.phone.e164.clone(),
            verification_status: label,
            verification_id: verification.id.clone(),
            status: verification.status,
            verified_at: verification.verified_at.filter(|_| verified),
            phone_intelligence: verified.then(|| PhoneIntelligence {
                line_type: verification.phone.line_type.as_str(),
                carrier: verification.phone.carrier_name.clone(),
                country: verification.phone.region.clone(),
                risk_score: verification.risk.risk_score,
                risk_level: verification.risk.risk_level,
            }),
            attempts_remaining: match outcome {
                CheckOutcome::Incorrect { attempts_remaining } => Some(attempts_remaining),
                CheckOutcome::AttemptsExceeded | CheckOutcome::NoActiveCode => Some(0),
                CheckOutcome::Verified | CheckOutcome::Expired => None,
            },
            warnings: verification.warnings,
        })
    }

    /// The rules run on the settled check; what they change, and the audit trail, go
    /// into a second write of the verification `id`, which answers.
    async fn rule_phase(
        &self,
        tenant_id: &str,
        id: &str,
        settings: &PhoneSettings,
        verification: Verification,
        outcome: CheckOutcome,
        now: DateTime<Utc>,
    ) -> Result<Verification, FlowError> {
        let label = label_of(outcome);
        let first_status = verification.status;
        let applicant_country = verification.applicant_country.clone();
        let mut working = verification;
        let mut trail = Vec::new();
        let firing = |trigger| Firing {
            trigger,
            stored: true,
            applicant_country: applicant_country.as_deref(),
            resends: 0,
            at: now,
        };
        let first = if outcome == CheckOutcome::Verified {
            Trigger::OtpVerified
        } else {
            Trigger::OtpFailed
        };
        self.fire(
            &mut trail,
            firing(first),
            Some(label.to_owned()),
            &mut working,
            settings,
        )
        .await?;
        settle(&mut working);
        if !working.status.is_open() {
            self.fire(
                &mut trail,
                firing(Trigger::VerificationCompleted),
                Some(label.to_owned()),
                &mut working,
                settings,
            )
            .await?;
            settle(&mut working);
        }
        self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &Engine::verification_key(tenant_id, id),
            |current| {
                let mut stored = current.ok_or(FlowError::NotFound("verification"))?;
                if !stored.status.is_open() && stored.status != first_status {
                    // A concurrent check closed the verification after this one's
                    // first write: its outcome stands. This request's firings stay
                    // on the audit trail.
                    stored.events.extend(trail.iter().cloned());
                    return Ok((Some(stored.clone()), stored));
                }
                let attempts = stored.code.attempts;
                let events = std::mem::take(&mut stored.events);
                stored = working.clone();
                stored.code.attempts = attempts.max(working.code.attempts);
                stored.events = events;
                stored.events.extend(trail.iter().cloned());
                Ok((Some(stored.clone()), stored))
            },
        )
    }

    /// Remembers the first applicant a number was verified for, for duplicate detection.
    pub(crate) fn record_owner(
        &self,
        tenant_id: &str,
        verification: &Verification,
    ) -> Result<(), FlowError> {
        let (Some(applicant_id), Some(verified_at)) =
            (&verification.applicant_id, verification.verified_at)
        else {
            return Ok(());
        };
        let owner = VerifiedOwner {
            applicant_id: applicant_id.clone(),
            verification_id: verification.id.clone(),
            verified_at,
        };
        self.db.insert_new(
            Tree::VerifiedNumbers,
            &self.db.number_key(tenant_id, &verification.phone.e164)?,
            &owner,
        )?;
        Ok(())
    }
}

/// One entry charged to a number's guess budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charge {
    ticket: u64,
    /// The entry used the budget's last guess: if it is wrong, the number locks.
    last: bool,
}

/// Until when code entry is locked by `log`: the number has had the budget's
/// maximum of failures within 24 hours, and the last of them is less than the
/// lockout ago. (A lock that ended with the count still at the maximum comes back
/// with the next failure.)
fn locked_until(log: &GuessLog, budget: GuessBudget, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let since = now - Duration::hours(24);
    let recent = log.failures.iter().filter(|failure| failure.at > since);
    if recent.clone().count() < budget.max_failures_per_24h as usize {
        return None;
    }
    let latest = recent.map(|failure| failure.at).max()?;
    let until = latest + Duration::minutes(i64::from(budget.lockout_minutes));
    (until > now).then_some(until)
}

/// Keeps the failures of the last 24 hours, at most `max` (the newest).
fn prune(log: &mut GuessLog, max: usize, now: DateTime<Utc>) {
    let since = now - Duration::hours(24);
    log.failures.retain(|failure| failure.at > since);
    log.failures.sort_by_key(|failure| failure.at);
    let excess = log.failures.len().saturating_sub(max);
    log.failures.drain(..excess);
}

/// The refusal of a code entry (or a send) while the number is locked.
pub(crate) fn guess_locked(
    budget: GuessBudget,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> FlowError {
    FlowError::RateLimited {
        code: "guess_budget_exhausted",
        message: format!(
            "too many wrong codes for this phone number ({} within 24 hours, across its verifications and applicants); code entry is locked until {}, retry then",
            budget.max_failures_per_24h,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        retry_after_secs: u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1),
    }
}

fn guess_warning(settings: &PhoneSettings, budget: GuessBudget, until: DateTime<Utc>) -> Warning {
    Warning::new(
        Risk::VerificationCodeGuessBudgetExhausted,
        settings.risk_actions.guess_budget_exhausted,
        Some(format!(
            "{} wrong codes for this number within 24 hours; code entry locked until {}",
            budget.max_failures_per_24h,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
    )
}

/// Adds `warning` unless the verification already has one for its risk.
fn add_warning(verification: &mut Verification, warning: Warning) {
    if !verification.warnings.iter().any(|w| w.risk == warning.risk) {
        verification.warnings.push(warning);
    }
}

impl Engine {
    /// Until when code entry for the number is locked by its guess budget, if it is.
    pub(crate) fn guess_lock(
        &self,
        tenant_id: &str,
        e164: &str,
        budget: GuessBudget,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, FlowError> {
        let log: Option<GuessLog> = self
            .db
            .get(Tree::GuessBudgets, &self.db.number_key(tenant_id, e164)?)?;
        Ok(log.and_then(|log| locked_until(&log, budget, now)))
    }

    /// Charges one entry to the number's guess budget, or says until when the number
    /// is locked. One compare-and-swap: concurrent entries are counted one by one.
    fn charge_guess(
        &self,
        tenant_id: &str,
        e164: &str,
        budget: GuessBudget,
        now: DateTime<Utc>,
    ) -> Result<Result<Charge, DateTime<Utc>>, FlowError> {
        // A locked number is refused without a write (the update leaves it as read).
        let ticket: u64 = rand::random();
        let max = budget.max_failures_per_24h as usize;
        self.db.update::<GuessLog, FlowError, _>(
            Tree::GuessBudgets,
            &self.db.number_key(tenant_id, e164)?,
            |current| {
                let mut log = current.unwrap_or_default();
                if let Some(until) = locked_until(&log, budget, now) {
                    return Ok((Some(log), Err(until)));
                }
                log.failures.push(GuessFailure { at: now, ticket });
                prune(&mut log, max, now);
                let last = log.failures.len() >= max;
                Ok((Some(log), Ok(Charge { ticket, last })))
            },
        )
    }

    /// Takes back an entry that compared no code.
    fn refund_guess(&self, budget_key: &[u8], ticket: u64) -> Result<(), FlowError> {
        self.db
            .update::<GuessLog, FlowError, _>(Tree::GuessBudgets, budget_key, |current| {
                let Some(mut log) = current else {
                    return Ok((None, ()));
                };
                log.failures.retain(|failure| failure.ticket != ticket);
                Ok(((!log.failures.is_empty()).then_some(log), ()))
            })
    }

    /// Puts the lock's warning on an open verification whose entry was refused.
    fn note_guess_lock(
        &self,
        tenant_id: &str,
        id: &str,
        settings: &PhoneSettings,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), FlowError> {
        let key = Engine::verification_key(tenant_id, id);
        let noted = |v: &Verification| {
            !v.status.is_open()
                || v.warnings
                    .iter()
                    .any(|w| w.risk == Risk::VerificationCodeGuessBudgetExhausted)
        };
        let current: Option<Verification> = self.db.get(Tree::Verifications, &key)?;
        if current.as_ref().is_none_or(noted) {
            return Ok(());
        }
        let warning = guess_warning(settings, settings.guess_budget, until);
        self.db
            .update::<Verification, FlowError, _>(Tree::Verifications, &key, |current| {
                let Some(mut verification) = current else {
                    return Ok((None, ()));
                };
                if !noted(&verification) {
                    add_warning(&mut verification, warning.clone());
                    verification.updated_at = now;
                }
                Ok((Some(verification), ()))
            })
    }
}

/// The answer's `verification_status` for an outcome.
fn label_of(outcome: CheckOutcome) -> &'static str {
    match outcome {
        CheckOutcome::Verified => "verified",
        CheckOutcome::Incorrect { .. } => "incorrect_code",
        CheckOutcome::AttemptsExceeded => "attempts_exceeded",
        CheckOutcome::Expired | CheckOutcome::NoActiveCode => "expired",
    }
}

/// The rule phase of a check on a tenant without rules on its triggers: the firings'
/// audit events, each followed by the settling, as [`Engine::fire`] records them when
/// no rule runs.
fn audit_without_rules(verification: &mut Verification, outcome: CheckOutcome, now: DateTime<Utc>) {
    let label = label_of(outcome);
    let record = |verification: &mut Verification, trigger: Trigger| {
        verification.events.push(AuditEvent {
            at: now,
            trigger: trigger.name().to_owned(),
            status: verification.status,
            detail: Some(label.to_owned()),
            rules: Vec::new(),
        });
        settle(verification);
    };
    let first = if outcome == CheckOutcome::Verified {
        Trigger::OtpVerified
    } else {
        Trigger::OtpFailed
    };
    record(verification, first);
    if !verification.status.is_open() {
        record(verification, Trigger::VerificationCompleted);
    }
}

/// Applies the rules' verdict after a check: a decline closes the verification (an
/// open one loses its code), a review turns an approval into a review.
pub(crate) fn settle(verification: &mut Verification) {
    match verification.verdict() {
        RiskAction::Decline if verification.status != ReportStatus::Declined => {
            verification.status = ReportStatus::Declined;
            verification.code.active = None;
        }
        RiskAction::Review if verification.status == ReportStatus::Approved => {
            verification.status = ReportStatus::InReview;
        }
        _ => {}
    }
}

pub(crate) fn status_name(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Approved => "Approved",
        ReportStatus::Declined => "Declined",
        ReportStatus::InReview => "In Review",
        ReportStatus::NotFinished => "Not Finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: GuessBudget = GuessBudget {
        max_failures_per_24h: 3,
        lockout_minutes: 60,
    };

    fn log(ats: &[DateTime<Utc>]) -> GuessLog {
        GuessLog {
            failures: ats
                .iter()
                .enumerate()
                .map(|(n, at)| GuessFailure {
                    at: *at,
                    ticket: n as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn the_maximum_within_24_hours_locks_for_the_lockout() {
        let t0 = Utc::now();
        let min = Duration::minutes;
        assert_eq!(
            locked_until(&log(&[t0, t0 + min(1)]), BUDGET, t0 + min(2)),
            None
        );
        let full = log(&[t0, t0 + min(1), t0 + min(2)]);
        assert_eq!(locked_until(&full, BUDGET, t0 + min(2)), Some(t0 + min(62)));
        // The lock ends, but the count stays: the next failure locks again.
        assert_eq!(locked_until(&full, BUDGET, t0 + min(62)), None);
        let again = log(&[t0 + min(1), t0 + min(2), t0 + min(63)]);
        assert_eq!(
            locked_until(&again, BUDGET, t0 + min(63)),
            Some(t0 + min(123))
        );
        // Failures older than 24 hours no longer count.
        let old = log(&[t0, t0 + min(1), t0 + Duration::hours(25)]);
        assert_eq!(locked_until(&old, BUDGET, t0 + Duration::hours(25)), None);
    }

    #[test]
    fn pruning_keeps_the_newest_of_the_window() {
        let t0 = Utc::now();
        let mut pruned = log(&[
            t0,
            t0 + Duration::hours(1),
            t0 + Duration::hours(2),
            t0 + Duration::hours(3),
            t0 + Duration::hours(26),
        ]);
        prune(&mut pruned, 3, t0 + Duration::hours(26));
        let kept: Vec<_> = pruned.failures.iter().map(|f| f.at).collect();
        assert_eq!(kept, [t0 + Duration::hours(3), t0 + Duration::hours(26)]);
    }
}
