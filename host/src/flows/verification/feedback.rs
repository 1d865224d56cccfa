//! Conversion feedback: `POST /v1/verifications/{id}/feedback`, where an app that
//! checks codes elsewhere, or completes a sign-up, reports what became of a
//! verification, as Prelude's and Telesign's APIs allow. A successful verify-otp is the
//! conversion signal on its own; feedback adds what Dialgate cannot see. The latest
//! outcome is kept on the verification, its report and its audit trail.

use serde::Deserialize;

use crate::model::{AuditEvent, Feedback, FeedbackOutcome, Verification};
use crate::store::Tree;

use crate::flows::{Caller, Engine, FlowError};

/// Changes of a verification's feedback at most: the audit trail of a verification
/// stays bounded, however often an app reports.
pub const MAX_FEEDBACK_REPORTS: u32 = 10;

/// Body of `POST /v1/verifications/{id}/feedback`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub outcome: FeedbackOutcome,
}

impl Engine {
    /// Records `request` on the caller's verification `id`. Reporting the outcome it
    /// already has changes nothing; another outcome replaces it, up to
    /// [`MAX_FEEDBACK_REPORTS`] changes.
    pub async fn feedback(
        &self,
        caller: &Caller,
        id: &str,
        request: FeedbackRequest,
    ) -> Result<Feedback, FlowError> {
        let key = Engine::verification_key(&caller.tenant_id, id);
        let now = self.clock.now();
        let outcome = request.outcome;
        let (feedback, converted) = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &key,
            |current| {
                let Some(mut verification) = current else {
                    return Err(FlowError::NotFound("verification"));
                };
                let reports = match &verification.feedback {
                    Some(given) if given.outcome == outcome => {
                        let given = given.clone();
                        return Ok((Some(verification), (given, None)));
                    }
                    Some(given) => given.reports,
                    None => 0,
                };
                if reports >= MAX_FEEDBACK_REPORTS {
                    return Err(FlowError::Conflict {
                        code: "feedback_limit",
                        message: format!(
                            "the feedback of this verification changed {MAX_FEEDBACK_REPORTS} times; it cannot change again"
                        ),
                    });
                }
                // A first report of a conversion Dialgate did not see itself counts
                // for the SMS-pumping detector, as a verified code would.
                let converted = (reports == 0
                    && outcome == FeedbackOutcome::Verified
                    && !verification.otp_verified)
                    .then(|| (verification.phone.clone(), verification.created_at));
                let feedback = Feedback {
                    outcome,
                    at: now,
                    reports: reports + 1,
                };
                verification.feedback = Some(feedback.clone());
                verification.updated_at = now;
                verification.events.push(AuditEvent {
                    at: now,
                    trigger: "feedback".into(),
                    status: verification.status,
                    detail: Some(outcome.as_str().to_owned()),
                    rules: Vec::new(),
                });
                Ok((Some(verification), (feedback, converted)))
            },
        )?;
        if let Some((phone, sent)) = converted {
            let settings = self.settings(&caller.tenant_id)?;
            self.pumping_converted(&caller.tenant_id, &settings, &phone, sent);
        }
        self.db.sync().await?;
        Ok(feedback)
    }
}
