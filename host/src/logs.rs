//! Logging: the subscriber `dialgate serve` logs through (text, or one JSON object a
//! line), and the masking of phone numbers in every line it writes.
//!
//! Numbers are masked where lines are written, not where they are logged: a number
//! can reach a log line inside an error's text (a provider's answer, a store key), so
//! every `+` followed by 7 to 15 digits is masked by [`mask_phone`] on its way out.
//!
//! Spans can also be exported over OTLP/HTTP (JSON bodies) to a collector the operator
//! names ([`Exporter`]): spans only, never events, so no log message (which could
//! carry a number in an error's text) leaves the process that way; a span's
//! attributes are the host's own fields (request id, method, route template, tenant
//! id, job kind, verification id).

use std::io::Write;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The subscriber for `format`: events passing `filter`, written to `writer` one line
/// each with phone numbers masked. JSON lines carry the event's fields at the top level
/// and the span it happened in (a request's, with its `request_id`) under `span`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    exporter: Option<&Exporter>,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Masking(writer));
    match format {
        LogFormat::Text => Box::new(builder.finish().with(span_export(exporter))),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish()
                .with(span_export(exporter)),
        ),
    }
}

/// The layer that hands finished spans to `exporter`: spans only, as events stay in
/// the (masked) log lines.
fn span_export<S>(exporter: Option<&Exporter>) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    exporter.map(|exporter| {
        SpansOnly(tracing_opentelemetry::layer().with_tracer(exporter.provider.tracer("dialgate")))
    })
}

/// A layer that passes `L` everything about spans and nothing about events.
struct SpansOnly<L>(L);

impl<S, L> tracing_subscriber::Layer<S> for SpansOnly<L>
where
    S: tracing::Subscriber,
    L: tracing_subscriber::Layer<S>,
{
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_id_change(old, new, ctx);
    }
}

/// Checks an OTLP endpoint: an `http` or `https` URL with a host.
pub fn check_otlp_endpoint(endpoint: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|err| anyhow::anyhow!("otlp_endpoint `{endpoint}` is not a URL: {err}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host().is_some(),
        "otlp_endpoint `{endpoint}` must be an http or https URL with a host"
    );
    Ok(())
}

/// The span export: a batch of finished spans is posted to the collector's
/// `/v1/traces` from a thread of the exporter's own, every 5 seconds or as soon as 512
/// are waiting; a collector that is away loses spans (up to 2,048 wait), never slows a
/// request.
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Exporter {
    /// Starts exporting to the collector at `endpoint` (its base URL).
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        check_otlp_endpoint(endpoint)?;
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|err| anyhow::anyhow!("cannot make the OTLP client: {err}"))?;
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(traces)
            .build()
            .map_err(|err| anyhow::anyhow!("cannot export spans to {endpoint}: {err}"))?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("dialgate")
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }
}

/// Held while the process logs: dropping it writes out the queued lines and exports
/// the finished spans.
pub struct Guard {
    pub lines: tracing_appender::non_blocking::WorkerGuard,
    pub exporter: Option<Exporter>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(exporter) = &self.exporter {
            if let Err(err) = exporter.provider.shutdown() {
                eprintln!("warning: spans not exported at exit: {err}");
            }
        }
    }
}

/// Makes writers that mask phone numbers in what they write.
#[derive(Debug)]
struct Masking<W>(W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Masking<W> {
    type Writer = Masked<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Masked(self.0.make_writer())
    }
}

/// A writer that masks phone numbers in each write (the formatter writes a whole line
/// at once).
#[derive(Debug)]
struct Masked<W>(W);

impl<W: Write> Write for Masked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(mask_phones_in(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A phone number as logs show it: the first four digits (the country code and a
/// little more) and the last three, the rest as `*` (`+447911123456` shows as
/// `+4479*****456`). A short number keeps less; characters other than digits stay.
pub fn mask_phone(phone: &str) -> String {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let (lead, tail) = match digits {
        10.. => (4, 3),
        7..=9 => (2, 2),
        _ => (1, 0),
    };
    let mut seen = 0;
    phone
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= lead || seen > digits - tail {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// `text` with every E.164 number in it (`+` and 7 to 15 digits) masked by
/// [`mask_phone`]: what the log writer does to every line.
pub fn mask_phones_in(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'+' {
            let run = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if (7..=15).contains(&run) {
                let end = at + 1 + run;
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buf.push_str(&text[copied..at]);
                buf.push_str(&mask_phone(&text[at..end]));
                copied = end;
                at = end;
                continue;
            }
        }
        at += 1;
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            std::borrow::Cow::Owned(buf)
        }
        None => std::borrow::Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn phones_are_masked() {
        assert_eq!(mask_phone("+447911123456"), "+4479*****456");
        assert_eq!(mask_phone("+998901234567"), "+9989*****567");
        assert_eq!(mask_phone("+12025550"), "+12****50");
        assert_eq!(mask_phone("+123"), "+1**");
        assert_eq!(mask_phone(""), "");
        assert_eq!(
            mask_phones_in("key acme/+447911123456/x and +44 is short, +1234567890123456 too long"),
            "key acme/+4479*****456/x and +44 is short, +1234567890123456 too long"
        );
        assert!(matches!(
            mask_phones_in("no numbers here: 447911123456"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(mask_phones_in("é+447911123456é"), "é+4479*****456é");
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("the buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("the buffer").clone();
            String::from_utf8(bytes)
                .expect("text")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[test]
    fn json_lines_carry_fields_and_the_span_with_numbers_masked() {
        let captured = Captured::default();
        let subscriber = subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            captured.clone(),
            None,
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "abc-1", route = "/v1/x");
            span.in_scope(|| {
                tracing::info!(status = 200u16, "sent to +447911123456");
            });
            tracing::debug!("filtered out");
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["status"], 200);
        assert_eq!(line["message"], "sent to +4479*****456");
        assert_eq!(line["span"]["name"], "request");
        assert_eq!(line["span"]["request_id"], "abc-1");
        assert!(line["timestamp"].is_string());
    }

    #[test]
    fn text_lines_are_masked_too() {
        let captured = Captured::default();
        let subscriber = subscriber(
            LogFormat::Text,
            EnvFilter::new("info"),
            captured.clone(),
            None,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(key = "t/+998901234567", "stored record is corrupt");
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("+9989*****567"), "{}", lines[0]);
        assert!(!lines[0].contains("+998901234567"), "{}", lines[0]);
    }
}
