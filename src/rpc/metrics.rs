//! `GET /metrics` on the JSON-RPC listener: the gateway's counters and health in the Prometheus
//! text exposition format 0.0.4 (`text/plain; version=0.0.4; charset=utf-8`).
//!
//! The request passes the API-key check first ([`super::auth`]: the same keys as the RPC, or
//! none from a loopback client with `rpc.metrics_without_key_on_loopback`). Families:
//! - `osgate_connector_{counter}_total{connector}`: the connector counters of
//!   `gateway.status` (readings, batches, errors, dropped…);
//! - `osgate_device_errors_total`, `osgate_device_online` (0/1) and
//!   `osgate_device_last_ok_timestamp_seconds`, labelled `{connector,device}`;
//! - `osgate_sink_{counter}_total{sink}` (received, published, acked, dropped, errors),
//!   `osgate_sink_buffered`, `osgate_sink_queue_depth` (batches waiting in the sink's queue),
//!   `osgate_sink_connected` (0/1);
//! - `osgate_uplink_connected{bridge}` (0/1): the local broker's bridges ([`crate::uplink`]);
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//!   `process_start_time_seconds` (the readers of [`crate::telemetry`]);
//! - `osgate_build_info{version,commit} 1`;
//! - `osgate_listener_connections{listener,addr}` and
//!   `osgate_listener_cutoffs_total{listener,addr,cause}` ([`crate::net::listen`]).
//!
//! The encoder is written here: the format is a few lines of text per sample, and a crate
//! would bring its own registry of metrics that would duplicate [`StatusRegistry`].

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Method, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;

use crate::pipeline::ReadingSender;
use crate::status::{ConnectorSnapshot, DeviceStatus, SinkSnapshot, StatusRegistry};

/// The path served.
pub const PATH: &str = "/metrics";

/// The content type of the text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the exposition reads.
pub struct MetricsSource {
    /// Counters and device health.
    pub registry: Arc<StatusRegistry>,
    /// The fan-out (sink queue depths).
    pub out: ReadingSender,
    /// When the gateway started (ms since the epoch).
    pub started: i64,
}

/// True for a request this module answers (`GET` or `HEAD` of [`PATH`]).
pub fn is_metrics_request<B>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD) && req.uri().path() == PATH
}

/// Writes families in the text format: `# HELP`, `# TYPE`, then samples.
struct Encoder {
    out: String,
}

impl Encoder {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// One `{prefix}_{field}_total` counter family per field, a sample per item labelled
    /// `label`.
    fn counters<T>(
        &mut self,
        prefix: &str,
        label: &str,
        items: &[(&str, &T)],
        fields: &[Field<T>],
    ) {
        for (field, help, get) in fields {
            let name = format!("{prefix}_{field}_total");
            self.family(&name, "counter", help);
            for (item, snap) in items {
                self.sample(&name, &[(label, item)], get(snap) as f64);
            }
        }
    }
}

/// A sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf` as the format spells them.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Help texts escape `\` and line feeds.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A counter field: its name, help text and how to read it from a snapshot.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

const CONNECTOR_COUNTERS: &[Field<ConnectorSnapshot>] = &[
    (
        "readings",
        "Readings handed to the pipeline (after transforms).",
        |s| s.readings,
    ),
    ("batches", "Batches handed to the pipeline.", |s| s.batches),
    (
        "suppressed",
        "Readings suppressed by report strategies (deadband, on_change).",
        |s| s.suppressed,
    ),
    ("filtered", "Readings dropped by a filter.", |s| s.filtered),
    ("bad", "Readings with bad or stale quality.", |s| s.bad),
    (
        "dropped",
        "Batches dropped because a sink's queue was full (drop_newest).",
        |s| s.dropped,
    ),
    (
        "lagged",
        "Polls that started late because the pipeline pushed back.",
        |s| s.lagged,
    ),
    ("errors", "Device or protocol errors.", |s| s.errors),
    ("messages", "Messages received by a listener.", |s| {
        s.messages
    }),
    (
        "unmatched",
        "Listener messages no mapping or device took.",
        |s| s.unmatched,
    ),
    (
        "refused",
        "Listener messages of refused devices or channels.",
        |s| s.refused,
    ),
];

const SINK_COUNTERS: &[Field<SinkSnapshot>] = &[
    ("received", "Readings taken from the sink's queue.", |s| {
        s.received
    }),
    ("published", "Readings handed to the transport.", |s| {
        s.published
    }),
    (
        "acked",
        "Readings confirmed delivered (MQTT QoS 1: PUBACK).",
        |s| s.acked,
    ),
    (
        "dropped",
        "Readings dropped (queue or buffer overflow).",
        |s| s.dropped,
    ),
    (
        "errors",
        "Transport errors (connection lost, refused).",
        |s| s.errors,
    ),
];

type DeviceFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DeviceStatus) -> Option<f64>,
);
type SinkGauge = (&'static str, &'static str, fn(&SinkSnapshot, usize) -> f64);

const DEVICE_FAMILIES: &[DeviceFamily] = &[
    (
        "osgate_device_online",
        "gauge",
        "1 while the device answers, else 0.",
        |d| Some(if d.online { 1.0 } else { 0.0 }),
    ),
    (
        "osgate_device_errors_total",
        "counter",
        "Errors of the device since start.",
        |d| Some(d.errors as f64),
    ),
    (
        "osgate_device_last_ok_timestamp_seconds",
        "gauge",
        "Time of the device's last successful read since the Unix epoch in seconds.",
        |d| d.last_ok.map(|t| t.0 as f64 / 1000.0),
    ),
];

const SINK_GAUGES: &[SinkGauge] = &[
    (
        "osgate_sink_buffered",
        "Messages waiting in the sink's own buffer (unacknowledged or waiting for the broker).",
        |s, _| s.buffered as f64,
    ),
    (
        "osgate_sink_queue_depth",
        "Batches waiting in the sink's queue.",
        |_, depth| depth as f64,
    ),
    (
        "osgate_sink_connected",
        "1 while the sink's transport is up, else 0.",
        |s, _| {
            if s.connected {
                1.0
            } else {
                0.0
            }
        },
    ),
];

/// The whole exposition.
pub fn render(src: &MetricsSource) -> String {
    let mut e = Encoder {
        out: String::with_capacity(4096),
    };
    e.family(
        "osgate_build_info",
        "gauge",
        "Version and git commit of the running osgate.",
    );
    e.sample(
        "osgate_build_info",
        &[("version", crate::VERSION), ("commit", crate::COMMIT)],
        1.0,
    );
    e.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the gateway since the Unix epoch in seconds.",
    );
    e.sample(
        "process_start_time_seconds",
        &[],
        src.started as f64 / 1000.0,
    );
    if let Some(rss) = crate::telemetry::rss_bytes() {
        e.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        e.sample("process_resident_memory_bytes", &[], rss as f64);
    }
    if let Some(cpu) = crate::telemetry::cpu_seconds() {
        e.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        e.sample("process_cpu_seconds_total", &[], cpu);
    }

    let connectors: Vec<_> = src
        .registry
        .connectors()
        .into_iter()
        .map(|(n, h)| {
            let devices = h.devices.lock().expect("status lock").clone();
            (n, h.counters.snapshot(), devices)
        })
        .collect();
    let snaps: Vec<_> = connectors.iter().map(|(c, s, _)| (&**c, s)).collect();
    e.counters("osgate_connector", "connector", &snaps, CONNECTOR_COUNTERS);
    for (name, kind, help, get) in DEVICE_FAMILIES {
        e.family(name, kind, help);
        for (c, _, devices) in &connectors {
            for (d, st) in devices {
                if let Some(v) = get(st) {
                    e.sample(name, &[("connector", c), ("device", d)], v);
                }
            }
        }
    }

    let depths = src.out.queue_depths();
    let sinks: Vec<_> = src
        .registry
        .sinks()
        .into_iter()
        .map(|(n, c)| {
            let depth = depths
                .iter()
                .find(|(counters, _)| Arc::ptr_eq(counters, &c))
                .map_or(0, |(_, d)| *d);
            (n, c.snapshot(), depth)
        })
        .collect();
    let snaps: Vec<_> = sinks.iter().map(|(n, s, _)| (&**n, s)).collect();
    e.counters("osgate_sink", "sink", &snaps, SINK_COUNTERS);
    for (name, help, get) in SINK_GAUGES {
        e.family(name, "gauge", help);
        for (s, snap, depth) in &sinks {
            e.sample(name, &[("sink", s)], get(snap, *depth));
        }
    }
    e.family(
        "osgate_uplink_connected",
        "gauge",
        "1 while the local broker's bridge is connected to its remote broker, else 0.",
    );
    for b in src.registry.uplink.bridges() {
        let up = if b.connected { 1.0 } else { 0.0 };
        e.sample("osgate_uplink_connected", &[("bridge", &b.name)], up);
    }
    // The listeners' connections and cut-offs (crate::net::listen).
    e.out.push_str(&src.registry.listeners.metrics_text());
    e.out
}

/// The tower layer of [`Metrics`].
#[derive(Clone)]
pub struct MetricsLayer {
    source: Arc<MetricsSource>,
}

impl MetricsLayer {
    /// Serves the exposition of `source`.
    pub fn new(source: MetricsSource) -> Self {
        MetricsLayer {
            source: Arc::new(source),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            source: self.source.clone(),
        }
    }
}

/// Answers [`PATH`]; passes everything else on.
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    source: Arc<MetricsSource>,
}

impl<S, B> tower::Service<Request<B>> for Metrics<S>
where
    S: tower::Service<Request<B>, Response = Response<HttpBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !is_metrics_request(&req) {
            return Box::pin(self.inner.call(req));
        }
        let body = if req.method() == Method::HEAD {
            String::new()
        } else {
            render(&self.source)
        };
        let mut r = Response::new(HttpBody::from(body));
        *r.status_mut() = StatusCode::OK;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(CONTENT_TYPE),
        );
        Box::pin(async move { Ok(r) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_are_escaped_as_the_format_says() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        let mut s = String::new();
        for v in [3.0, 0.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20] {
            push_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "3 0.25 NaN +Inf -Inf 100000000000000000000 ");
    }

    #[test]
    fn an_empty_gateway_still_names_itself() {
        let src = MetricsSource {
            registry: Arc::default(),
            out: ReadingSender::new(Vec::new()),
            started: 1_700_000_000_000,
        };
        let text = render(&src);
        assert!(text.contains(&format!(
            "osgate_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            crate::VERSION,
            crate::COMMIT
        )));
        assert!(text.contains("# TYPE osgate_connector_readings_total counter\n"));
        assert!(text.contains("process_start_time_seconds 1700000000\n"));
    }
}
