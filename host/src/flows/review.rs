//! Cases and the review queue: listing, filtering and working the cases rules open
//! (`/v1/cases`), and a reviewer's decision on a verification In Review
//! (`POST /v1/verifications/{id}/review`).
//!
//! Choices:
//! - Cases are listed newest first (then by id, descending); `created_after` and
//!   `created_before` are exclusive bounds. A list reads the tenant's cases and filters
//!   them in memory.
//! - A patch records one history entry per field it changes (a patch that sets a field
//!   to the value it has records nothing); a note is recorded as a change of `notes`.
//!   `resolved_at` is set when a case becomes `resolved` and cleared when it is
//!   reopened.
//! - A review decision settles the verification in one compare-and-swap write (so of
//!   two concurrent decisions, one wins and the other gets 409), resolves the cases of
//!   the verification that are not resolved yet (with a note saying how the
//!   verification was decided), then fires `verification_completed` and merges what
//!   its rules add (flags, decisions, cases, requested information, risk, warnings,
//!   route) into the stored verification in a second write. The reviewer's decision
//!   stands: a rule at that firing cannot change the status again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::model::{
    AuditEvent, Case, CaseChange, CaseNote, CaseStatus, ReportStatus, Review, ReviewDecision,
    Verification, CASE_PRIORITIES,
};
use crate::store::{key, Tree};

use crate::flows::rules::triggers::{Firing, Trigger};
use crate::flows::verification::report::Report;
use crate::flows::verification::verify::status_name;
use crate::flows::{Caller, Engine, FlowError};

/// Cases a list returns when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` a list accepts.
pub const MAX_LIMIT: usize = 500;
/// The longest note (of a case or a review), in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// The longest assignee, author, reviewer or filter value, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// History entries a case can hold; a patch that would go beyond is refused.
pub const MAX_HISTORY: usize = 500;

/// The query of `GET /v1/cases`. Values are checked by [`Engine::cases`], which names
/// the parameter of a bad one.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    pub status: Option<String>,
    pub case_type: Option<String>,
    pub priority: Option<String>,
    pub assignee: Option<String>,
    pub verification_id: Option<String>,
    /// RFC 3339; only cases created after it.
    pub created_after: Option<String>,
    /// RFC 3339; only cases created before it.
    pub created_before: Option<String>,
    /// 1 to 500; 50 when absent.
    pub limit: Option<String>,
}

/// A checked [`CaseQuery`].
#[derive(Debug)]
struct Filter {
    status: Option<CaseStatus>,
    case_type: Option<String>,
    priority: Option<String>,
    assignee: Option<String>,
    verification_id: Option<String>,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    limit: usize,
}

impl CaseQuery {
    fn check(self) -> Result<Filter, FlowError> {
        let status = self
            .status
            .map(|name| {
                CaseStatus::from_name(&name).ok_or_else(|| {
                    FlowError::invalid(
                        "status",
                        format!("unknown status {name:?}; expected open, in_progress or resolved"),
                    )
                })
            })
            .transpose()?;
        let priority = self
            .priority
            .map(|name| {
                if CASE_PRIORITIES.contains(&name.as_str()) {
                    Ok(name)
                } else {
                    Err(FlowError::invalid(
                        "priority",
                        format!(
                            "unknown priority {name:?}; expected low, medium, high or critical"
                        ),
                    ))
                }
            })
            .transpose()?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    FlowError::invalid(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        Ok(Filter {
            status,
            case_type: self
                .case_type
                .map(|v| checked_name("case_type", &v))
                .transpose()?,
            priority,
            assignee: self
                .assignee
                .map(|v| checked_name("assignee", &v))
                .transpose()?,
            verification_id: self
                .verification_id
                .map(|v| checked_name("verification_id", &v))
                .transpose()?,
            after: self
                .created_after
                .map(|v| rfc3339("created_after", &v))
                .transpose()?,
            before: self
                .created_before
                .map(|v| rfc3339("created_before", &v))
                .transpose()?,
            limit,
        })
    }
}

impl Filter {
    fn matches(&self, case: &Case) -> bool {
        self.status.is_none_or(|status| case.status == status)
            && self.case_type.as_ref().is_none_or(|t| &case.case_type == t)
            && self.priority.as_ref().is_none_or(|p| &case.priority == p)
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| case.assignee.as_ref() == Some(a))
            && self
                .verification_id
                .as_ref()
                .is_none_or(|v| case.verification_id.as_ref() == Some(v))
            && self.after.is_none_or(|after| case.created_at > after)
            && self.before.is_none_or(|before| case.created_at < before)
    }
}

fn rfc3339(field: &str, text: &str) -> Result<DateTime<Utc>, FlowError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| {
            FlowError::invalid(
                field,
                format!("{text:?} is not an RFC 3339 timestamp ({err}); e.g. 2025-01-31T12:00:00Z"),
            )
        })
}

/// A name (assignee, author, reviewer, filter value): trimmed, 1 to 128 characters, no
/// control characters.
fn checked_name(field: &str, value: &str) -> Result<String, FlowError> {
    let value = value.trim();
    if value.is_empty()
        || value.chars().count() > MAX_NAME_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(FlowError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A note: trimmed, 1 to 2000 characters.
fn checked_note(field: &str, value: &str) -> Result<String, FlowError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FlowError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NOTE_CHARS {
        return Err(FlowError::invalid(
            field,
            format!("at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Body of `PATCH /v1/cases/{id}`: at least one of `assignee`, `status`, `note`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CasePatch {
    /// A name assigns the case; `null` unassigns it.
    #[serde(default, deserialize_with = "present")]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<Option<CaseStatus>>,
    /// Appended to the case's notes.
    pub note: Option<String>,
    /// Who makes the change, for the history and the note.
    pub author: Option<String>,
}

/// A checked [`CasePatch`].
#[derive(Debug, Clone)]
struct Change {
    assignee: Option<Option<String>>,
    status: Option<CaseStatus>,
    note: Option<String>,
    author: Option<String>,
}

impl CasePatch {
    fn check(self) -> Result<Change, FlowError> {
        if self.assignee.is_none() && self.status.is_none() && self.note.is_none() {
            return Err(FlowError::invalid(
                "body",
                "the patch changes nothing; give assignee, status or note",
            ));
        }
        let status = match self.status {
            None => None,
            Some(None) => {
                return Err(FlowError::invalid(
                    "status",
                    "must be open, in_progress or resolved, not null",
                ))
            }
            Some(Some(status)) => Some(status),
        };
        Ok(Change {
            assignee: self
                .assignee
                .map(|name| name.map(|n| checked_name("assignee", &n)).transpose())
                .transpose()?,
            status,
            note: self.note.map(|n| checked_note("note", &n)).transpose()?,
            author: self
                .author
                .map(|a| checked_name("author", &a))
                .transpose()?,
        })
    }
}

/// Applies `change` to `case` at `now`, recording each field it changes; on an error
/// the case is left as it was.
fn apply(case: &mut Case, change: &Change, now: DateTime<Utc>) -> Result<(), FlowError> {
    let mut next = case.clone();
    let mut entries = Vec::new();
    let entry = |field: &str, from: Option<String>, to: Option<String>| CaseChange {
        at: now,
        by: change.author.clone(),
        field: field.to_owned(),
        from,
        to,
    };
    if let Some(assignee) = &change.assignee {
        if &next.assignee != assignee {
            entries.push(entry("assignee", next.assignee.clone(), assignee.clone()));
            next.assignee = assignee.clone();
        }
    }
    if let Some(status) = change.status {
        if next.status != status {
            entries.push(entry(
                "status",
                Some(next.status.as_str().to_owned()),
                Some(status.as_str().to_owned()),
            ));
            next.status = status;
            next.resolved_at = (status == CaseStatus::Resolved).then_some(now);
        }
    }
    if let Some(text) = &change.note {
        entries.push(entry("notes", None, Some(text.clone())));
        next.notes.push(CaseNote {
            at: now,
            author: change.author.clone().or_else(|| next.assignee.clone()),
            text: text.clone(),
        });
    }
    if entries.is_empty() {
        return Ok(());
    }
    if next.history.len() + entries.len() > MAX_HISTORY {
        return Err(FlowError::Conflict {
            code: "case_history_full",
            message: format!(
                "the case has reached {MAX_HISTORY} recorded changes; open a new case to go on"
            ),
        });
    }
    next.history.extend(entries);
    next.updated_at = Some(now);
    *case = next;
    Ok(())
}

/// A case as the API shows it: a case never changed was last updated when it opened.
fn view(mut case: Case) -> Case {
    case.updated_at.get_or_insert(case.created_at);
    case
}

/// Body of `POST /v1/verifications/{id}/review`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub decision: ReviewDecision,
    pub note: String,
    pub reviewer: Option<String>,
}

impl Engine {
    fn case_key(tenant_id: &str, id: &str) -> Vec<u8> {
        key(&[tenant_id, id])
    }

    /// The caller's cases that match `query`, newest first.
    pub fn cases(&self, caller: &Caller, query: CaseQuery) -> Result<Vec<Case>, FlowError> {
        let filter = query.check()?;
        let mut cases: Vec<Case> = self.db.scan(
            Tree::Cases,
            &key(&[&caller.tenant_id, ""]),
            usize::MAX,
            false,
        )?;
        cases.retain(|case| filter.matches(case));
        cases.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        cases.truncate(filter.limit);
        Ok(cases.into_iter().map(view).collect())
    }

    /// One of the caller's cases.
    pub fn case(&self, caller: &Caller, id: &str) -> Result<Case, FlowError> {
        self.db
            .get(Tree::Cases, &Engine::case_key(&caller.tenant_id, id))?
            .map(view)
            .ok_or(FlowError::NotFound("case"))
    }

    /// Changes one of the caller's cases: assignee, status, a note.
    pub async fn update_case(
        &self,
        caller: &Caller,
        id: &str,
        patch: CasePatch,
    ) -> Result<Case, FlowError> {
        let change = patch.check()?;
        let now = self.clock.now();
        let case = self.db.update::<Case, FlowError, _>(
            Tree::Cases,
            &Engine::case_key(&caller.tenant_id, id),
            |current| {
                let mut case = current.ok_or(FlowError::NotFound("case"))?;
                apply(&mut case, &change, now)?;
                Ok((Some(case.clone()), case))
            },
        )?;
        self.emit_case(crate::webhooks::EventType::CaseUpdated, &case);
        self.db.sync().await?;
        Ok(view(case))
    }

    /// A reviewer's decision on one of the caller's verifications In Review; answers
    /// the report as it stands after it.
    pub async fn review(
        &self,
        caller: &Caller,
        id: &str,
        request: ReviewRequest,
    ) -> Result<Report, FlowError> {
        let tenant_id = caller.tenant_id.as_str();
        let note = checked_note("note", &request.note)?;
        let reviewer = request
            .reviewer
            .as_deref()
            .map(|name| checked_name("reviewer", name))
            .transpose()?;
        let settings = self.settings(tenant_id)?;
        let now = self.clock.now();
        let decision = request.decision;
        let status = decision.status();
        let verification_key = Engine::verification_key(tenant_id, id);

        let decided = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &verification_key,
            |current| {
                let mut verification = current.ok_or(FlowError::NotFound("verification"))?;
                if verification.status != ReportStatus::InReview {
                    return Err(FlowError::Conflict {
                        code: "not_in_review",
                        message: format!(
                            "the verification's status is {}; only a verification In Review can be decided",
                            status_name(verification.status)
                        ),
                    });
                }
                verification.status = status;
                verification.updated_at = now;
                verification.review = Some(Review {
                    decision,
                    note: note.clone(),
                    reviewer: reviewer.clone(),
                    decided_at: now,
                });
                verification.events.push(AuditEvent {
                    at: now,
                    trigger: "review".to_owned(),
                    status,
                    detail: Some(note.clone()),
                    rules: Vec::new(),
                });
                Ok((Some(verification.clone()), verification))
            },
        )?;

        self.resolve_cases_of(&decided, decision, reviewer.as_deref(), now)?;

        let mut working = decided.clone();
        let mut trail = Vec::new();
        self.fire(
            &mut trail,
            Firing {
                trigger: Trigger::VerificationCompleted,
                stored: true,
                applicant_country: None,
                resends: 0,
                at: now,
            },
            Some(format!("review {}", decision.as_str())),
            &mut working,
            &settings,
        )
        .await?;
        let stored = self.db.update::<Verification, FlowError, _>(
            Tree::Verifications,
            &verification_key,
            |current| {
                let mut current = current.ok_or(FlowError::NotFound("verification"))?;
                merge_rule_changes(&mut current, &decided, &working);
                current.events.extend(trail.iter().cloned());
                Ok((Some(current.clone()), current))
            },
        )?;
        self.emit_outcome(&stored);
        self.db.sync().await?;
        self.full_report(stored)
    }

    /// Resolves the cases of `verification` that are not resolved, noting the decision.
    fn resolve_cases_of(
        &self,
        verification: &Verification,
        decision: ReviewDecision,
        reviewer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), FlowError> {
        let change = Change {
            assignee: None,
            status: Some(CaseStatus::Resolved),
            note: Some(format!(
                "Resolved: the verification was {} in review.",
                match decision {
                    ReviewDecision::Approve => "approved",
                    ReviewDecision::Decline => "declined",
                }
            )),
            author: reviewer.map(str::to_owned),
        };
        for case_ref in &verification.cases {
            let resolved = self.db.update::<Case, FlowError, _>(
                Tree::Cases,
                &Engine::case_key(&verification.tenant_id, &case_ref.case_id),
                |current| match current {
                    Some(mut case) if case.status != CaseStatus::Resolved => {
                        apply(&mut case, &change, now)?;
                        Ok((Some(case.clone()), Some(case)))
                    }
                    other => Ok((other, None)),
                },
            );
            if let Ok(Some(case)) = &resolved {
                self.emit_case(crate::webhooks::EventType::CaseUpdated, case);
            }
            if let Err(err) = resolved {
                match err {
                    FlowError::Store(_) => return Err(err),
                    // A case whose history is full stays as it is; the decision stands.
                    other => tracing::warn!(
                        case = %case_ref.case_id,
                        "case not resolved after the review: {other}"
                    ),
                }
            }
        }
        Ok(())
    }
}

/// Adds to `current` what the rules at `verification_completed` changed on `working`
/// relative to `decided` (the verification they started from), without undoing
/// anything written concurrently. The status stays the reviewer's.
fn merge_rule_changes(current: &mut Verification, decided: &Verification, working: &Verification) {
    for flag in &working.flags {
        if !current.flags.contains(flag) {
            current.flags.push(flag.clone());
        }
    }
    current.decisions.extend(
        working
            .decisions
            .iter()
            .skip(decided.decisions.len())
            .cloned(),
    );
    current
        .cases
        .extend(working.cases.iter().skip(decided.cases.len()).cloned());
    for info in &working.info_requested {
        if !current.info_requested.contains(info) {
            current.info_requested.push(info.clone());
        }
    }
    if working.risk != decided.risk {
        current.risk = working.risk.clone();
    }
    for warning in &working.warnings {
        if !current.warnings.iter().any(|w| w.risk == warning.risk) {
            current.warnings.push(warning.clone());
        }
    }
    if working.route != decided.route {
        current.route = working.route.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_stored_before_the_review_queue_still_loads() {
        let stored = r#"{"id":"case_1","tenant_id":"t","verification_id":"v","phone":"+998901234567",
            "applicant_id":null,"case_type":"fraud","priority":"high","title":"Recent SIM swap detected",
            "status":"open","flags":["recent_sim_swap"],"opened_by":"flag-sim-swap",
            "created_at":"2025-01-31T12:00:00Z"}"#;
        let case: Case = serde_json::from_str(stored).expect("an old case loads");
        assert_eq!(case.status, CaseStatus::Open);
        assert_eq!(case.assignee, None);
        assert!(case.notes.is_empty() && case.history.is_empty());
        let shown = view(case.clone());
        assert_eq!(shown.updated_at, Some(case.created_at));
    }

    #[test]
    fn a_patch_records_only_what_it_changes_and_refuses_a_full_history() {
        let now = Utc::now();
        let mut case = Case::default();
        let change = CasePatch {
            assignee: Some(Some(" alice ".to_owned())),
            status: Some(Some(CaseStatus::Open)),
            note: None,
            author: None,
        }
        .check()
        .expect("valid");
        apply(&mut case, &change, now).expect("applies");
        assert_eq!(case.assignee.as_deref(), Some("alice"));
        assert_eq!(case.history.len(), 1, "the status did not change");
        assert_eq!(case.updated_at, Some(now));

        case.history = vec![case.history[0].clone(); MAX_HISTORY];
        let note = CasePatch {
            note: Some("one more".to_owned()),
            ..CasePatch::default()
        }
        .check()
        .expect("valid");
        assert!(matches!(
            apply(&mut case, &note, now),
            Err(FlowError::Conflict {
                code: "case_history_full",
                ..
            })
        ));
        assert!(case.notes.is_empty());
    }

    #[test]
    fn an_empty_patch_is_refused() {
        let err = CasePatch::default().check().expect_err("empty");
        assert!(matches!(err, FlowError::Invalid { ref field, .. } if field == "body"));
    }
}
