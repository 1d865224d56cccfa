//! Durability with the real `dialgate` binary: SIGKILL in the middle of a send/verify
//! loop loses nothing that was acknowledged, SIGTERM shuts down cleanly with exit code
//! 0, and a restart keeps tenants, keys, settings and the blocklist.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::support::*;

/// Acknowledged operations to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 24;
/// Concurrent clients in the send/verify loop.
const WORKERS: u32 = 4;

/// A `dialgate serve` process on a loopback port.
pub struct Binary {
    pub child: Child,
    pub api: Api,
    // Kept open so the server never writes to a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Binary {
    /// Starts the binary on `data_dir` and waits for its listening line.
    async fn start(data_dir: &Path) -> Self {
        let dir = data_dir.display().to_string();
        Self::launch(&["--data-dir".as_ref(), data_dir.as_os_str()], &dir).await
    }

    /// Starts the binary on `data_dir` with `args` besides, logging at `log`.
    pub async fn start_with(data_dir: &Path, args: &[&str], log: &str) -> Self {
        let dir = data_dir.display().to_string();
        let mut all = vec!["--data-dir".as_ref(), data_dir.as_os_str()];
        all.extend(args.iter().map(|arg| std::ffi::OsStr::new(*arg)));
        Self::launch_logging(&all, &dir, log).await
    }

    /// Starts the binary on the PostgreSQL database `url` (a replica of a fleet),
    /// allowed to reach loopback (a test's webhook receiver) through the egress policy.
    pub async fn start_on_postgres(url: &str) -> Self {
        let host = url.rsplit_once('@').map_or(url, |(_, host)| host);
        let args = [
            "--store".as_ref(),
            url.as_ref(),
            "--egress-allow".as_ref(),
            "127.0.0.0/8".as_ref(),
        ];
        Self::launch(&args, host).await
    }

    /// Starts the binary with `args` and waits for its listening line, which names
    /// `place` (where its records are).
    async fn launch(args: &[&std::ffi::OsStr], place: &str) -> Self {
        Self::launch_logging(args, place, "warn").await
    }

    /// [`Binary::launch`], logging at `log` (`DIALGATE_LOG`).
    async fn launch_logging(args: &[&std::ffi::OsStr], place: &str, log: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dialgate"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .arg("--operator-key")
            .arg(OPERATOR_KEY)
            .env_remove("DIALGATE_CONFIG")
            .env_remove("DIALGATE_PRODUCTION")
            .env_remove("DIALGATE_CODE_SECRET")
            .env_remove("DIALGATE_DISPOSABLE_LIST")
            .env_remove("DIALGATE_STORE")
            .env_remove("DIALGATE_OTLP_ENDPOINT")
            .env("DIALGATE_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the dialgate binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await
                .expect("read the binary's stdout")
                .expect("the binary exited before announcing its address");
            if let Some(rest) = line.strip_prefix("dialgate listening on http://") {
                let (addr, data) = rest
                    .split_once(' ')
                    .expect("address followed by where the records are");
                assert!(data.contains(place), "{line}");
                break addr.to_owned();
            }
        };
        Self {
            child,
            api: Api::new(format!("http://{addr}")),
            _stdout: lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }
}

/// What a client saw acknowledged before the crash.
#[derive(Debug, Clone)]
pub struct Acked {
    pub verification_id: String,
    pub phone: String,
    pub applicant: String,
    pub code: String,
    /// The verify answer was 2xx with `verified`.
    pub verified: bool,
}

/// Sends and verifies codes in a loop until the server stops answering (or `stop` is
/// set). Every 2xx answer is recorded and reported on `acks`.
pub async fn send_verify_loop(
    api: Api,
    tenant: Tenant,
    worker: u32,
    acks: mpsc::UnboundedSender<()>,
    stop: Arc<AtomicBool>,
) -> Vec<Acked> {
    let mut seen = Vec::new();
    for i in 0..100_000u32 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let phone = format!("+998901{worker}{i:05}");
        let applicant = format!("crash-{worker}-{i}");
        let body =
            serde_json::to_vec(&json!({"phone": phone, "applicant_id": applicant})).expect("json");
        let Ok(sent) = api
            .try_raw(
                Method::POST,
                "/v1/phone/send-otp",
                Some(&tenant.key),
                Some(("application/json", body)),
                &[],
            )
            .await
        else {
            break;
        };
        assert_eq!(
            sent.status, 200,
            "send failed while the server was up: {}",
            sent.text
        );
        let verification_id = sent.body["verification_id"]
            .as_str()
            .expect("id")
            .to_owned();
        let path = format!("/v1/dev/outbox?phone={}", encode(&phone));
        let Ok(outbox) = api
            .try_raw(Method::GET, &path, Some(&tenant.key), None, &[])
            .await
        else {
            seen.push(Acked {
                verification_id,
                phone,
                applicant,
                code: String::new(),
                verified: false,
            });
            break;
        };
        let code = outbox.body["messages"][0]["code"]
            .as_str()
            .expect("code in the outbox")
            .to_owned();
        seen.push(Acked {
            verification_id,
            phone: phone.clone(),
            applicant: applicant.clone(),
            code: code.clone(),
            verified: false,
        });
        let _ = acks.send(());
        let body =
            serde_json::to_vec(&json!({"phone": phone, "applicant_id": applicant, "code": code}))
                .expect("json");
        let Ok(verified) = api
            .try_raw(
                Method::POST,
                "/v1/phone/verify-otp",
                Some(&tenant.key),
                Some(("application/json", body)),
                &[],
            )
            .await
        else {
            break;
        };
        assert_eq!(
            verified.status, 200,
            "verify failed while the server was up: {}",
            verified.text
        );
        assert_eq!(verified.body["verification_status"], "verified");
        if let Some(last) = seen.last_mut() {
            last.verified = true;
        }
        let _ = acks.send(());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_and_verifies_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let mut server = Binary::start(&data).await;
    let tenant = server.api.create_tenant(OPERATOR_KEY, "crash").await;
    let generous = json!({"per_minute": 1_000_000, "burst": 100_000});
    let settings = server
        .api
        .settings(
            &tenant,
            json!({
                "code_length": 8,
                "rate_limits": {
                    "send_otp": {"per_tenant": generous, "per_ip": generous},
                    "verify_otp": {"per_tenant": generous, "per_ip": generous},
                },
            }),
        )
        .await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(send_verify_loop(
                server.api.clone(),
                tenant.clone(),
                worker,
                tx.clone(),
                Arc::new(AtomicBool::new(false)),
            ))
        })
        .collect();
    drop(tx);
    for _ in 0..ACKS_BEFORE_KILL {
        rx.recv().await.expect("the loop stopped before the kill");
    }
    // SIGKILL while the workers are still sending and verifying.
    server.child.kill().await.expect("SIGKILL the server");
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.expect("worker"));
    }
    assert!(
        acked.len() >= ACKS_BEFORE_KILL / 2,
        "{} sends acknowledged",
        acked.len()
    );
    assert!(acked.iter().any(|a| a.verified));

    let restarted = Binary::start(&data).await;
    let api = &restarted.api;
    // Tenant, key and settings survived.
    let tenants = api
        .get("/v1/tenants", OPERATOR_KEY)
        .await
        .expect(200)
        .clone();
    assert_eq!(tenants["tenants"][0]["id"], tenant.id.as_str());
    assert_eq!(
        api.get("/v1/settings/phone-verification", &tenant.key)
            .await
            .expect(200),
        &settings
    );

    check_acknowledged(api, &tenant, &acked).await;
}

/// Checks on `api` that everything in `acked` survived: each verification's report,
/// its message in the outbox, its status, and an unverified code that still verifies.
pub async fn check_acknowledged(api: &Api, tenant: &Tenant, acked: &[Acked]) {
    for ack in acked {
        let report = api
            .get(
                &format!("/v1/verifications/{}", ack.verification_id),
                &tenant.key,
            )
            .await;
        let report = report.expect(200);
        assert_eq!(report["phone"]["full_number"], ack.phone.as_str());
        assert_eq!(report["applicant_id"], ack.applicant.as_str());
        let messages = api.outbox(tenant, &ack.phone).await;
        assert!(
            messages
                .iter()
                .any(|m| m["verification_id"] == ack.verification_id.as_str()),
            "the acknowledged message for {} is gone: {messages:?}",
            ack.phone
        );
        let status = report["phone"]["status"].as_str().expect("status");
        assert!(["Not Finished", "Approved"].contains(&status), "{report}");
        if ack.verified {
            assert_eq!(report["phone"]["status"], "Approved", "{report}");
            assert!(report["phone"]["verified_at"].is_string(), "{report}");
        } else if report["phone"]["status"] == "Not Finished" && !ack.code.is_empty() {
            // The code (and the stored hashing secret) survived: it still verifies.
            let verified = api
                .verify(tenant, &ack.phone, &ack.applicant, &ack.code)
                .await;
            assert_eq!(verified.expect(200)["verification_status"], "verified");
        }
    }
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_a_restart_keeps_tenants_keys_and_settings() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let mut server = Binary::start(&data).await;
    let tenant = server.api.create_tenant(OPERATOR_KEY, "durable").await;
    let second = server
        .api
        .post("/v1/keys", &tenant.key, json!({"name": "backup"}))
        .await;
    let second_key = second.expect(201)["api_key"]
        .as_str()
        .expect("secret")
        .to_owned();
    let settings = server
        .api
        .settings(&tenant, json!({"code_length": 5, "block_voip": true}))
        .await;
    server
        .api
        .post("/v1/blocklist", &tenant.key, json!({"phone": uz_number(9)}))
        .await
        .expect(201);
    let sent = server.api.send(&tenant, UZ_BEELINE, "a").await;
    let code = server.api.latest_code(&tenant, UZ_BEELINE).await;
    assert_eq!(code.len(), 5);
    server.api = Api::new(String::new());

    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = server.child.wait().await.expect("wait for the server");
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM must end the server cleanly: {exit:?}"
    );

    let restarted = Binary::start(&data).await;
    let api = &restarted.api;
    let tenants = api
        .get("/v1/tenants", OPERATOR_KEY)
        .await
        .expect(200)
        .clone();
    assert_eq!(tenants["tenants"].as_array().expect("tenants").len(), 1);
    assert_eq!(tenants["tenants"][0]["id"], tenant.id.as_str());
    assert_eq!(
        api.get("/v1/settings/phone-verification", &tenant.key)
            .await
            .expect(200),
        &settings
    );
    let backup = Tenant {
        id: tenant.id.clone(),
        key: second_key,
    };
    assert_eq!(
        api.get("/v1/keys", &backup.key).await.expect(200)["keys"]
            .as_array()
            .expect("keys")
            .len(),
        2
    );
    let blocked = api
        .get("/v1/blocklist", &tenant.key)
        .await
        .expect(200)
        .clone();
    assert_eq!(blocked["entries"][0]["phone"], uz_number(9).as_str());

    // The code sent before the restart still verifies.
    let verified = api.verify(&backup, UZ_BEELINE, "a", &code).await;
    let verified = verified.expect(200);
    assert_eq!(verified["verification_status"], "verified");
    assert_eq!(verified["verification_id"], sent["verification_id"]);
}

#[tokio::test]
async fn the_soak_scenario_reports_each_interval_and_the_restart_on_its_data() {
    let printed = run_bench(&[
        "--scenarios",
        "soak",
        "--seconds",
        "3",
        "--connections",
        "4",
        "--rate",
        "200",
    ])
    .await;
    // One line per interval (a second each on a 3 s run), each with its errors last.
    let intervals: Vec<&str> = printed
        .lines()
        .filter(|line| line.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(intervals.len() >= 2, "{printed}");
    for line in &intervals {
        assert_eq!(line.split_whitespace().last(), Some("0"), "errors: {line}");
    }
    assert!(printed.contains("rss over the second half"), "{printed}");
    assert!(
        printed.contains("restart to ready on the run's data"),
        "{printed}"
    );
}
