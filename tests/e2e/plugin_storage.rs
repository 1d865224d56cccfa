//! Plugin storage, uploads and logs against a hostile tenant, end to end: a key-value
//! filler meets its quota, deleting gives data, blobs and compiled code back, a
//! compile-heavy component is refused without compiling, upload churn leaves the store
//! where it started, a log flood is cut and escaped, and a dry run's writes never
//! reach the real data. The rule is the in-tree hostile guest `tests/hostile/abuser`.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::Method;
use serde_json::{json, Value};

use dialgate::plugins::testing::guest_component;
use dialgate::store::{key, Tree};

use crate::support::*;

const LOOKUP_ONLY: &str = "phone_lookup_complete";

async fn upload_bytes(server: &TestServer, tenant: &Tenant, bytes: Vec<u8>, query: &str) -> Reply {
    server
        .raw(
            Method::POST,
            &format!("/v1/plugins?{query}"),
            Some(&tenant.key),
            Some(("application/wasm", bytes)),
            &[],
        )
        .await
}

/// Uploads the abuser rule as `name`, bound to lookups, configured with `config`.
async fn abuser(server: &TestServer, tenant: &Tenant, name: &str, config: Value) -> String {
    let reply = upload_bytes(
        server,
        tenant,
        guest_component("hostile_abuser"),
        &format!("name={name}&kind=rule&version=1&triggers={LOOKUP_ONLY}"),
    )
    .await;
    let id = reply.expect(201)["id"].as_str().expect("id").to_owned();
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &tenant.key,
            json!({ "config": config }),
        )
        .await
        .expect(200);
    id
}

/// The flags of one lookup of `phone`.
async fn lookup_flags(server: &TestServer, tenant: &Tenant, phone: &str) -> Vec<String> {
    let answer = server
        .post("/v1/phone/lookup", &tenant.key, json!({ "phone": phone }))
        .await
        .expect(200)
        .clone();
    answer["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("no flags: {answer}"))
        .iter()
        .map(|flag| flag.as_str().expect("flag").to_owned())
        .collect()
}

/// The one flag starting with `prefix`.
fn flag<'a>(flags: &'a [String], prefix: &str) -> &'a str {
    flags
        .iter()
        .find(|flag| flag.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} flag in {flags:?}"))
}

/// Entries in `tree` under `prefix`, and their bytes (keys after the prefix, values).
fn entries(server: &TestServer, tree: Tree, prefix: &[u8]) -> usize {
    server
        .engine()
        .db
        .scan_raw(tree, prefix, usize::MAX)
        .expect("scan the store")
        .len()
}

/// The plugin's key-value entries and their bytes as the plugin sees them, read from
/// the store itself: a value is stored sealed, and opens to a tag byte, the length of
/// its name (the key holds only the name's hash) and its bytes, so the disk holds what
/// the quota counts and a fixed overhead.
fn kv_in_store(server: &TestServer, tenant: &Tenant, plugin: &str) -> (u64, u64) {
    let prefix = key(&[&tenant.id, plugin, ""]);
    let db = &server.engine().db;
    let pairs = db
        .scan_raw(Tree::PluginKv, &prefix, usize::MAX)
        .expect("scan the store");
    let bytes = pairs
        .iter()
        .map(|(key, value)| {
            let opened = db
                .personal()
                .expect("the keys")
                .open(Tree::PluginKv, key, value)
                .expect("a sealed value");
            let rest = opened
                .strip_prefix(&[1])
                .expect("a value with its name's length");
            let (name, value) = rest.split_at(4);
            u64::from(u32::from_le_bytes(name.try_into().expect("4 bytes"))) + value.len() as u64
        })
        .sum();
    (pairs.len() as u64, bytes)
}

/// Blobs and compiled artifacts in the store.
fn stored_components(server: &TestServer) -> (usize, usize) {
    (
        entries(server, Tree::PluginBlobs, b""),
        entries(server, Tree::PluginArtifacts, b""),
    )
}

async fn compiled(server: &TestServer) -> u64 {
    let stats = server.get("/v1/plugin-runtime", OPERATOR_KEY).await;
    stats.expect(200)["stats"]["compiled"]
        .as_u64()
        .expect("compiled")
}

async fn storage(server: &TestServer, tenant: &Tenant, id: &str) -> Value {
    let plugin = server
        .get(&format!("/v1/plugins/{id}"), &tenant.key)
        .await
        .expect(200)
        .clone();
    plugin["storage"].clone()
}

#[tokio::test]
async fn a_kv_filler_meets_its_quota_and_its_usage_is_shown() {
    let server = TestServer::start_with(|config| {
        config.plugin_bounds.storage.kv_max_bytes = 8 << 10;
        config.plugin_bounds.storage.kv_max_keys = 40;
    })
    .await;
    let tenant = server.tenant("filler").await;
    let big = abuser(
        &server,
        &tenant,
        "big-values",
        json!({"values": "12", "value_bytes": "1024"}),
    )
    .await;

    let first = lookup_flags(&server, &tenant, UK_VOIP).await;
    let report = flag(&first, "kv:");
    assert!(report.ends_with(":quota-exceeded"), "{report}");
    let written: u64 = report.split(':').nth(1).expect("count").parse().expect("n");
    assert!((1..12).contains(&written), "{report}");
    let (keys, bytes) = kv_in_store(&server, &tenant, &big);
    assert!(bytes <= 8 << 10, "{bytes} bytes stored");
    assert_eq!(keys, written + 1, "the values and the call counter");
    let shown = storage(&server, &tenant, &big).await;
    assert_eq!(shown["kv_bytes"], bytes, "{shown}");
    assert_eq!(shown["kv_keys"], keys, "{shown}");
    assert_eq!(shown["kv_max_bytes"], 8 << 10);
    assert_eq!(shown["kv_max_keys"], 40);

    // Full: later calls write nothing more, and the store stops growing.
    for _ in 0..3 {
        let again = lookup_flags(&server, &tenant, UK_VOIP).await;
        assert_eq!(flag(&again, "kv:"), "kv:0:quota-exceeded");
    }
    let (_, after) = kv_in_store(&server, &tenant, &big);
    // The call counter's text keeps its length ("1" to "4").
    assert_eq!(after, bytes);

    // The key quota holds as well, for another plugin with its own quota.
    let many = abuser(
        &server,
        &tenant,
        "many-keys",
        json!({"values": "60", "value_bytes": "1"}),
    )
    .await;
    let flags = lookup_flags(&server, &tenant, UK_VOIP).await;
    assert_eq!(flag(&flags, "kv:39:"), "kv:39:quota-exceeded", "{flags:?}");
    assert_eq!(kv_in_store(&server, &tenant, &many).0, 40);
    assert_eq!(storage(&server, &tenant, &many).await["kv_keys"], 40);
}

#[tokio::test]
async fn deleting_plugins_gives_back_data_blobs_and_compiled_code() {
    let server = TestServer::start().await;
    let (a, b) = (server.tenant("a").await, server.tenant("b").await);
    let before = stored_components(&server);

    // The same component for two tenants, plus a second version for one of them.
    let id_a = abuser(&server, &a, "filler", json!({"values": "3"})).await;
    let id_b = abuser(&server, &b, "filler", json!({"values": "3"})).await;
    upload_bytes(
        &server,
        &a,
        guest_component("guest_echo"),
        &format!("name=filler&kind=rule&version=2&triggers={LOOKUP_ONLY}"),
    )
    .await
    .expect(201);
    lookup_flags(&server, &a, UK_VOIP).await;
    lookup_flags(&server, &b, UK_VOIP).await;
    assert_eq!(kv_in_store(&server, &a, &id_a).0, 4);
    assert_eq!(stored_components(&server), (before.0 + 2, before.1 + 2));

    // Deleting a's plugin frees its data and the version only it used; b's copy of
    // the shared component stays and still runs.
    server
        .delete(&format!("/v1/plugins/{id_a}"), &a.key)
        .await
        .expect(204);
    assert_eq!(kv_in_store(&server, &a, &id_a).0, 0);
    assert_eq!(stored_components(&server), (before.0 + 1, before.1 + 1));
    let flags = lookup_flags(&server, &b, UK_VOIP).await;
    assert_eq!(flag(&flags, "kv:"), "kv:3:none");

    server
        .delete(&format!("/v1/plugins/{id_b}"), &b.key)
        .await
        .expect(204);
    assert_eq!(kv_in_store(&server, &b, &id_b).0, 0);
    assert_eq!(stored_components(&server), before);

    // A first-party plugin's compiled code outlives its last install, so installing
    // it again compiles nothing; its blob goes with the install.
    let installed = server
        .post("/v1/plugins/catalog/velocity", &a.key, json!({}))
        .await
        .expect(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let compiled_once = compiled(&server).await;
    server
        .delete(&format!("/v1/plugins/{installed}"), &a.key)
        .await
        .expect(204);
    assert_eq!(stored_components(&server), (before.0, before.1 + 1));
    server
        .post("/v1/plugins/catalog/velocity", &a.key, json!({}))
        .await
        .expect(201);
    assert_eq!(compiled(&server).await, compiled_once);
}

#[tokio::test]
async fn upload_churn_leaves_the_store_where_it_started() {
    let server = TestServer::start().await;
    let tenant = server.tenant("churn").await;
    let before = stored_components(&server);
    for round in 0..5 {
        // A different component each round: the echo rule padded with a custom section.
        let mut bytes = guest_component("guest_echo");
        custom_section(&mut bytes, &format!("round-{round}"));
        let id = upload_bytes(
            &server,
            &tenant,
            bytes,
            &format!("name=churn&kind=rule&version={round}&triggers={LOOKUP_ONLY}"),
        )
        .await
        .expect(201)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(stored_components(&server), (before.0 + 1, before.1 + 1));
        server
            .delete(&format!("/v1/plugins/{id}"), &tenant.key)
            .await
            .expect(204);
        assert_eq!(stored_components(&server), before);
    }
}

/// Appends a custom section named `name` to a component: a new content hash, the
/// same code.
fn custom_section(bytes: &mut Vec<u8>, name: &str) {
    let mut section = Vec::new();
    leb(&mut section, name.len() as u64);
    section.extend_from_slice(name.as_bytes());
    bytes.push(0);
    leb(bytes, section.len() as u64);
    bytes.extend_from_slice(&section);
}

fn leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A component holding one core module of `functions` functions whose bodies are
/// `body_bytes` of code each, exporting nothing: costly to compile, of no world.
fn generated_component(functions: u32, body_bytes: usize) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, Module, ModuleSection, TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut declared = FunctionSection::new();
    let mut code = CodeSection::new();
    // `i32.const 1; drop`, repeated.
    let body: Vec<u8> = [0x41, 0x01, 0x1a].repeat(body_bytes / 3);
    for _ in 0..functions {
        declared.function(0);
        let mut function = Function::new([]);
        function.raw(body.iter().copied());
        function.raw([0x0b]);
        code.function(&function);
    }
    let mut module = Module::new();
    module.section(&types).section(&declared).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

#[tokio::test]
async fn compile_heavy_components_are_refused_before_compiling_and_leave_nothing() {
    let (server, tenant) = TestServer::with_tenant().await;
    let before = stored_components(&server);
    let compiled_before = compiled(&server).await;

    // Megabytes of code of no world: refused by parsing.
    let heavy = generated_component(2_000, 1_800);
    assert!(heavy.len() > 3 << 20, "{} bytes", heavy.len());
    let reply = upload_bytes(
        &server,
        &tenant,
        heavy,
        "name=heavy&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await;
    let error = reply.error(422, "wrong_world");
    assert_eq!(error["field"], "component", "{error}");

    // One function past the body-size limit.
    let reply = upload_bytes(
        &server,
        &tenant,
        generated_component(1, 300 << 10),
        "name=wide&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await;
    let error = reply.error(422, "component_too_large");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("function body"),
        "{error}"
    );

    // More code in all than the limit allows (8 MiB of it, as in the attack).
    let reply = upload_bytes(
        &server,
        &tenant,
        generated_component(4_000, 2_000),
        "name=tall&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await;
    reply.error(422, "component_too_large");

    // An adapter offered as a rule: the world is read before compiling too.
    let reply = upload_bytes(
        &server,
        &tenant,
        guest_component("camara_lookup"),
        "name=mislabelled&kind=rule&version=1&triggers=phone_lookup_complete",
    )
    .await;
    reply.error(422, "wrong_world");

    assert_eq!(compiled(&server).await, compiled_before);
    let stats = server.get("/v1/plugin-runtime", OPERATOR_KEY).await;
    assert_eq!(stats.expect(200)["stats"]["refused_before_compiling"], 4);
    assert_eq!(stored_components(&server), before);
    let listed = server.get("/v1/plugins", &tenant.key).await;
    assert_eq!(listed.expect(200)["plugins"], json!([]));
}

#[tokio::test]
async fn uploads_past_the_tenants_rate_are_refused_with_retry_after() {
    let server = TestServer::start_with(|config| config.plugin_bounds.uploads_per_minute = 2).await;
    let (tenant, other) = (server.tenant("eager").await, server.tenant("calm").await);
    let query = |n: u32| format!("name=r{n}&kind=rule&version=1&triggers={LOOKUP_ONLY}");
    for n in 0..2 {
        upload_bytes(&server, &tenant, guest_component("guest_echo"), &query(n))
            .await
            .expect(201);
    }
    let refused = upload_bytes(&server, &tenant, guest_component("guest_echo"), &query(2)).await;
    refused.error(429, "rate_limited");
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another tenant has its own allowance.
    upload_bytes(&server, &other, guest_component("guest_echo"), &query(0))
        .await
        .expect(201);
    // The next minute renews it.
    server.advance(chrono::Duration::seconds(61));
    upload_bytes(&server, &tenant, guest_component("guest_echo"), &query(2))
        .await
        .expect(201);
}

/// Warnings and above the host logs, captured for the whole test process.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init();
        assert!(installed.is_ok(), "another test installed a log subscriber");
        logs
    }))
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_log_flood_is_cut_by_the_budget_and_cannot_forge_host_lines() {
    let logs = captured_logs();
    let server = TestServer::start_with(|config| {
        config.plugin_bounds.storage.log_lines_per_minute = 50;
    })
    .await;
    let tenant = server.tenant("flood").await;
    let id = abuser(&server, &tenant, "flood", json!({"log_lines": "30"})).await;
    for _ in 0..3 {
        let flags = lookup_flags(&server, &tenant, UK_VOIP).await;
        assert_eq!(flag(&flags, "logged:"), "logged:30");
    }
    let shown = storage(&server, &tenant, &id).await;
    assert_eq!(shown["log_lines_dropped"], 40, "{shown}");

    let text = String::from_utf8(logs.lock().expect("logs").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().filter(|line| line.contains(&id)).collect();
    let plugin_lines: Vec<&&str> = lines
        .iter()
        .filter(|line| line.contains("abuser line"))
        .collect();
    assert_eq!(plugin_lines.len(), 50, "{lines:#?}");
    for line in &plugin_lines {
        assert!(
            line.contains(
                r"\n2026-01-01T00:00:00Z  INFO dialgate: forged host line\r\u{1b}[2K\u{202e}"
            ),
            "{line}"
        );
    }
    // No line of the log is the forged one: every mention stays on its plugin's line,
    // with no raw control character.
    for line in text
        .lines()
        .filter(|line| line.contains("forged host line"))
    {
        assert!(line.contains("abuser line"), "{line}");
        assert!(!line.contains(['\u{1b}', '\r', '\u{202e}']), "{line:?}");
    }
    // The budget's exhaustion is reported once, by the host.
    let budget = lines
        .iter()
        .filter(|line| line.contains("log budget spent"))
        .count();
    assert_eq!(budget, 1, "{lines:#?}");
}

#[tokio::test]
async fn dry_runs_write_to_a_scratch_layer_that_is_discarded() {
    let (server, tenant) = TestServer::with_tenant().await;
    let id = abuser(&server, &tenant, "counter", json!({"count": "1"})).await;
    for expected in ["count:1", "count:2"] {
        let flags = lookup_flags(&server, &tenant, UK_VOIP).await;
        assert_eq!(flag(&flags, "count:"), expected);
    }
    let usage = storage(&server, &tenant, &id).await;
    for _ in 0..2 {
        let run = server
            .post(
                &format!("/v1/plugins/{id}/dry-run"),
                &tenant.key,
                json!({"event": {
                    "trigger": "phone_lookup_complete",
                    "phone": {"e164": UK_VOIP, "line_type": "voip"},
                    "config": {"count": "1", "values": "2"}
                }}),
            )
            .await
            .expect(200)
            .clone();
        // The run reads its own writes over the real data...
        assert_eq!(run["actions"][0]["flag"], "count:3", "{run}");
        assert_eq!(run["actions"][1]["flag"], "kv:2:none", "{run}");
    }
    // ...and none of them reach it.
    assert_eq!(storage(&server, &tenant, &id).await, usage);
    assert_eq!(kv_in_store(&server, &tenant, &id).0, 1);
    let flags = lookup_flags(&server, &tenant, UK_VOIP).await;
    assert_eq!(flag(&flags, "count:"), "count:3");
}

#[tokio::test]
async fn compiled_code_past_the_operators_budget_is_evicted_and_reloaded_on_use() {
    // A budget of one byte: a tenant's plugins cannot keep their code in memory
    // together, whatever they do; each call brings its own back.
    let server = TestServer::start_with(|config| config.plugin_bounds.code_memory_bytes = 1).await;
    let tenant = server.tenant("many").await;
    let echo = upload_rule(
        &server,
        &tenant,
        "guest_echo",
        "echo",
        LOOKUP_ONLY,
        Value::Null,
    )
    .await;
    let sleep = upload_rule(
        &server,
        &tenant,
        "hostile_sleep",
        "sleep",
        LOOKUP_ONLY,
        json!({"sleep_ms": "1"}),
    )
    .await;
    assert_ne!(echo, sleep);
    let compiled_before = compiled(&server).await;
    for n in 0..3 {
        let flags = lookup_flags(&server, &tenant, &uz_number(n)).await;
        assert!(
            flags
                .iter()
                .any(|flag| flag.starts_with("phone_lookup_complete|")),
            "{flags:?}"
        );
        assert!(flags.iter().any(|flag| flag == "slept_1"), "{flags:?}");
    }
    let stats = server.get("/v1/plugin-runtime", OPERATOR_KEY).await;
    let code = stats.expect(200)["stats"]["code"].clone();
    assert_eq!(code["budget_bytes"], 1, "{code}");
    assert!(code["evictions"].as_u64() >= Some(4), "{code}");
    assert!(code["reloads"].as_u64() >= Some(4), "{code}");
    // Reloads deserialise the stored artifacts; nothing was compiled again.
    assert_eq!(compiled(&server).await, compiled_before);
}

#[tokio::test]
async fn the_index_of_a_components_users_survives_a_restart() {
    let server = TestServer::start().await;
    let (a, b) = (server.tenant("a").await, server.tenant("b").await);
    let before = stored_components(&server);
    let id_a = upload_rule(&server, &a, "guest_echo", "echo", LOOKUP_ONLY, Value::Null).await;
    let id_b = upload_rule(&server, &b, "guest_echo", "echo", LOOKUP_ONLY, Value::Null).await;
    assert_eq!(
        stored_components(&server).0,
        before.0 + 1,
        "one blob, shared"
    );
    // The index is rebuilt from the records when the server starts again.
    let server = server.restart().await;
    server
        .delete(&format!("/v1/plugins/{id_a}"), &a.key)
        .await
        .expect(204);
    assert_eq!(
        stored_components(&server).0,
        before.0 + 1,
        "b still uses it"
    );
    let flags = lookup_flags(&server, &b, UK_VOIP).await;
    assert!(
        flags
            .iter()
            .any(|flag| flag.starts_with("phone_lookup_complete|")),
        "{flags:?}"
    );
    server
        .delete(&format!("/v1/plugins/{id_b}"), &b.key)
        .await
        .expect(204);
    assert_eq!(
        stored_components(&server).0,
        before.0,
        "its last user is gone"
    );
}

#[tokio::test]
async fn warm_instances_serve_only_their_binding_and_a_change_starts_afresh() {
    let server = TestServer::start().await;
    let a = server.tenant("warm-a").await;
    let b = server.tenant("warm-b").await;
    let id = abuser(&server, &a, "warm", json!({"instance": "1"})).await;
    abuser(&server, &b, "warm", json!({"instance": "1"})).await;

    // The instance of a's first call serves its next one (it counts its calls in its
    // own memory).
    let first = lookup_flags(&server, &a, UK_VOIP).await;
    assert_eq!(flag(&first, "instance:"), "instance:1");
    let second = lookup_flags(&server, &a, UK_VOIP).await;
    assert_eq!(flag(&second, "instance:"), "instance:2");
    // b runs the same component in instances of its own.
    let theirs = lookup_flags(&server, &b, UK_VOIP).await;
    assert_eq!(flag(&theirs, "instance:"), "instance:1");
    // A change to another of a's plugins leaves this binding's instance warm.
    abuser(&server, &a, "another", json!({})).await;
    let third = lookup_flags(&server, &a, UK_VOIP).await;
    assert_eq!(flag(&third, "instance:"), "instance:3");
    // A change of the binding (here its configuration) starts afresh.
    server
        .put(
            &format!("/v1/plugins/{id}/config"),
            &a.key,
            json!({ "config": {"instance": "1", "changed": "yes"} }),
        )
        .await
        .expect(200);
    let changed = lookup_flags(&server, &a, UK_VOIP).await;
    assert_eq!(flag(&changed, "instance:"), "instance:1");

    let stats = server.get("/v1/plugin-runtime", OPERATOR_KEY).await;
    let warm = &stats.expect(200)["stats"]["warm"];
    assert!(warm["reused"].as_u64().expect("reused") >= 1, "{warm}");
    assert!(warm["parked"].as_u64().expect("parked") >= 1, "{warm}");
    assert_eq!(warm["limit"], 128, "{warm}");
}
