//! The `backtest` scenario: a tenant's recorded traffic of `--backtest-verifications`
//! verifications (100,000 by default) over the last six days, then one backtest of a
//! candidate declarative rule set over all of it through the real HTTP endpoint,
//! timed.
//!
//! The traffic is made by the flows themselves: 200 lookups that decide a
//! verification each (ten countries) through `Engine::lookup` and 100 code flows
//! (send, verify) over HTTP, the tenant's own declarative rules firing and recorded
//! on the audit trails; then these are stored again and again under fresh ids spread
//! over the six days, straight into the store (what 100,000 requests would have
//! left, without sending them).

use std::sync::Arc;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::flows::{Caller, Engine, LookupRequest};
use crate::model::Verification;
use crate::store::{key, Tree};

use super::{expect_ok, post_json, BenchArgs, HttpClient, Rules, NUMBERS};

/// Lookups that make distinct verifications the traffic repeats.
const SEEDS: usize = 200;
/// Code flows (send and verify) that make the others.
const FLOWS: usize = 100;

/// The tenant's current rules: a flag on VoIP numbers, review of risky ones.
fn current_rules() -> Vec<Value> {
    vec![
        json!({
            "rule_id": "flag_voip",
            "trigger": "phone_lookup_complete",
            "conditions": {"field": "phone_type", "operator": "eq", "value": "voip"},
            "actions": [{"type": "add_flag", "flag": "voip"}],
        }),
        json!({
            "rule_id": "review_risky",
            "trigger": "phone_lookup_complete",
            "conditions": {"field": "risk_score", "operator": "gte", "value": 60},
            "actions": [{"type": "review"}],
        }),
    ]
}

/// The candidate: the current rules, plus a decline of two countries with a case, a
/// flag on mobile numbers, and a review of Brazilian numbers at completion.
fn candidate_rules() -> Vec<Value> {
    let mut rules = current_rules();
    rules.push(json!({
        "rule_id": "decline_ru_cn",
        "trigger": "phone_lookup_complete",
        "conditions": {"any": [
            {"field": "country", "operator": "eq", "value": "RU"},
            {"field": "country", "operator": "eq", "value": "CN"}
        ]},
        "actions": [
            {"type": "decline", "reason": "country not served"},
            {"type": "create_case", "case_type": "geo", "priority": "low", "title": "Country not served"}
        ],
    }));
    rules.push(json!({
        "rule_id": "flag_mobile",
        "trigger": "phone_lookup_complete",
        "conditions": {"all": [
            {"field": "phone_type", "operator": "eq", "value": "mobile"},
            {"field": "risk_score", "operator": "lt", "value": 50}
        ]},
        "actions": [{"type": "add_flag", "flag": "mobile"}],
    }));
    rules.push(json!({
        "rule_id": "review_br",
        "trigger": "verification_completed",
        "conditions": {"field": "country", "operator": "in", "value": ["BR"]},
        "actions": [{"type": "review"}],
    }));
    rules
}

pub async fn run(
    client: &HttpClient,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let mut server = super::start_tenants(dir, &[Rules::Workflows(0)]).await?;
    let (tenant_id, api_key) = server.tenants.remove(0);
    let engine = Arc::clone(&server.engine);
    let mut settings = (*engine.settings(&tenant_id)?).clone();
    // Lookups that name an applicant decide a verification of their own.
    settings.require_otp = false;
    engine
        .put_settings(&tenant_id, settings)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for rule in current_rules() {
        engine
            .create_workflow_rule(&tenant_id, &rule)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let caller = Caller {
        tenant_id: tenant_id.clone(),
        client_ip: "127.0.0.1".to_owned(),
    };
    for n in 0..SEEDS {
        engine
            .lookup(
                &caller,
                LookupRequest {
                    phone: NUMBERS[n % NUMBERS.len()].to_owned(),
                    applicant_id: Some(format!("applicant-{n}")),
                    applicant_country: Some("US".to_owned()),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // And code flows over HTTP: send, then verify (five triggers on each trail).
    let base = format!("http://{}/v1/phone", server.addr);
    for n in 0..FLOWS {
        let phone = format!("+447911{:06}", (n * 7_919) % 300_000);
        let applicant = format!("flow-{n}");
        let send = json!({"phone": phone, "applicant_id": applicant, "channel": "sms"});
        expect_ok(
            client
                .request(post_json(&format!("{base}/send-otp"), &api_key, &send)?)
                .await,
        )
        .await?;
        let code = server
            .outbox
            .codes
            .lock()
            .remove(&phone)
            .context("code not recorded")?;
        let verify = json!({"phone": phone, "applicant_id": applicant, "code": code});
        expect_ok(
            client
                .request(post_json(&format!("{base}/verify-otp"), &api_key, &verify)?)
                .await,
        )
        .await?;
    }
    let prefix = key(&[&tenant_id, ""]);
    let seeds: Vec<Verification> =
        engine
            .db
            .scan(Tree::Verifications, &prefix, SEEDS + FLOWS, false)?;
    anyhow::ensure!(!seeds.is_empty(), "the lookups stored no verification");
    // The window holds the originals and their copies: `total` in all.
    let total = args.backtest_verifications.max(seeds.len() as u64);
    let copies = total - seeds.len() as u64;
    let filling = std::time::Instant::now();
    let now = engine.clock.now();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let share = copies.div_ceil(workers as u64);
    let seeds = Arc::new(seeds);
    let mut writers = Vec::new();
    for worker in 0..workers {
        let (engine, seeds, tenant_id) =
            (Arc::clone(&engine), Arc::clone(&seeds), tenant_id.clone());
        let count = share.min(copies.saturating_sub(share * worker as u64));
        writers.push(tokio::task::spawn_blocking(
            move || -> anyhow::Result<()> {
                let mut rng = StdRng::seed_from_u64(worker as u64);
                for n in 0..count {
                    let mut verification = seeds[n as usize % seeds.len()].clone();
                    let at =
                        now - chrono::Duration::milliseconds(rng.random_range(0..6 * 86_400_000));
                    verification.id = Engine::id_at(at);
                    verification.created_at = at;
                    verification.updated_at = at;
                    engine.db.put(
                        Tree::Verifications,
                        &key(&[&tenant_id, &verification.id]),
                        &verification,
                    )?;
                }
                Ok(())
            },
        ));
    }
    for writer in writers {
        writer.await??;
    }
    engine.db.sync().await?;
    println!(
        "backtest: {total} verifications stored for one tenant in {:.1} s (copies of {} made by lookups and code flows)",
        filling.elapsed().as_secs_f64(),
        seeds.len()
    );
    let url = format!("http://{}/v1/workflows/rules/backtest", server.addr);
    let body = json!({
        "rules": candidate_rules(),
        "days": 7,
        "max_verifications": total.min(u64::from(crate::flows::rules::backtest::MAX_VERIFICATIONS)),
        "time_budget_ms": crate::flows::rules::backtest::MAX_BUDGET_MS,
    });
    let asked = std::time::Instant::now();
    let answer = expect_ok(client.request(post_json(&url, &api_key, &body)?).await).await?;
    let took = asked.elapsed();
    let answer: Value = serde_json::from_slice(&answer).context("the backtest's answer")?;
    println!(
        "backtest of 5 declarative rules over {} verifications: {:.2} s over HTTP ({} ms in the server), complete: {}{}",
        answer["scanned"],
        took.as_secs_f64(),
        answer["elapsed_ms"],
        answer["complete"],
        answer["stopped"]
            .as_str()
            .map(|why| format!(" (stopped: {why})"))
            .unwrap_or_default()
    );
    println!(
        "  outcomes {}; flags added {}; cases added {}",
        answer["outcomes"], answer["flags_added"], answer["cases_added"]
    );
    server.task.abort();
    Ok(())
}
