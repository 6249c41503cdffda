//! From messages to readings: the compiled mappings (topic patterns with captures, device and
//! channel templates, how the payload is read) and [`Mapper::map`], which turns one message into
//! readings of the listener's devices, counting bad payloads per mapping.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rumqttc::Publish;

use super::config::{Format, Mapping};
use super::topic::{Captures, Pattern, Template};
use crate::device::listener::{Devices, Input};
use crate::device::json_paths::JsonPaths;
use crate::device::payload::{leaves, Pick, TimeParser, ValueType};
use crate::ConnectorContext;
use osgate_core::reading::Timestamp;
use osgate_core::transform::TransformConfig;

/// osgate's own topic roots: a connector never feeds these back into the gateway.
pub(super) const OWN_ROOTS: [&str; 4] = ["telemetry", "status", "command", "rpc"];

/// A channel a mapping produces.
#[derive(Debug, Clone)]
struct OutChannel {
    name: Template,
    unit: Option<Arc<str>>,
    transform: TransformConfig,
    pick: Pick,
}

#[derive(Debug, Clone)]
enum Channels {
    /// These channels.
    Listed(Vec<OutChannel>),
    /// Every number and bool of the JSON document, named by key path after `prefix`.
    Leaves { prefix: Option<Template> },
}

/// A compiled mapping.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    /// The mapping's topic as written (its input name).
    pub(super) name: Arc<str>,
    pub(super) pattern: Pattern,
    device: Template,
    json: bool,
    /// When every value is read by pointer (or by regex over the text): the parts of the
    /// payload to parse; `None` parses it whole.
    paths: Option<JsonPaths>,
    channels: Channels,
    timestamp: Option<TimeParser>,
}

pub(super) fn compile(m: &Mapping) -> Result<Compiled, (&'static str, String)> {
    let pattern = Pattern::new(&m.topic).map_err(|e| ("topic", e))?;
    // The obvious loops are refused here; the runtime skips this gateway's own topics that
    // a wider filter (`+/{device}/#`) brings in.
    let first = m.topic.split('/').next().unwrap_or("");
    if m.topic == "#" || OWN_ROOTS.contains(&first) {
        return Err((
            "topic",
            format!(
                "\"{}\" would take osgate's own telemetry/, status/, command/ or rpc/ messages back in (a loop when this broker is the sink's); subscribe to the devices' topics",
                m.topic
            ),
        ));
    }
    let device = Template::new(m.device.as_deref().unwrap_or("{device}"), &pattern)
        .map_err(|e| ("device", e))?;
    let json = m.format == Format::Json;
    let single_type = match m.format {
        Format::Json | Format::Auto => ValueType::Auto,
        Format::Number => ValueType::Number,
        Format::Bool => ValueType::Bool,
        Format::Text => ValueType::Text,
    };
    let channel_template = match &m.channel {
        Some(c) => Some(Template::new(c, &pattern).map_err(|e| ("channel", e))?),
        None if pattern.capture("channel").is_some() => {
            Some(Template::new("{channel}", &pattern).map_err(|e| ("channel", e))?)
        }
        None => None,
    };
    let unit: Option<Arc<str>> = m.unit.as_deref().map(Into::into);
    let channels = match (&m.channels, channel_template) {
        (Some(_), _) if m.channel.is_some() || m.unit.is_some() => {
            return Err((
                "channels",
                "set either channels, or channel and unit for a single value, not both".into(),
            ))
        }
        (Some(list), _) => {
            if list.is_empty() {
                return Err(("channels", "must not be empty".into()));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let err = |f: &str, e: String| -> (&'static str, String) {
                    ("channels", format!("[{i}].{f}: {e}"))
                };
                let name = Template::new(&c.name, &pattern).map_err(|e| err("name", e))?;
                let s = &c.settings;
                let ty = if s.value_type == ValueType::Auto {
                    single_type
                } else {
                    s.value_type
                };
                let pick = Pick::new(s.pointer.as_deref(), s.regex.as_deref(), ty)
                    .map_err(|(f, e)| err(f, e))?;
                if pick.needs_json() && !json {
                    return Err(err(
                        "pointer",
                        "a JSON pointer needs \"format\": \"json\"".into(),
                    ));
                }
                out.push(OutChannel {
                    name,
                    unit: c.unit.clone(),
                    transform: c.transform().clone(),
                    pick,
                });
            }
            Channels::Listed(out)
        }
        (None, prefix) if json => {
            if unit.is_some() {
                return Err((
                    "unit",
                    "with json and no channels every field becomes a channel; give units per channel in \"channels\"".into(),
                ));
            }
            Channels::Leaves { prefix }
        }
        (None, Some(name)) => Channels::Listed(vec![OutChannel {
            name,
            unit,
            transform: TransformConfig::default(),
            pick: Pick::Whole(single_type),
        }]),
        (None, None) => {
            return Err((
                "channel",
                "a single value needs a channel name (or a {channel} capture in the topic)".into(),
            ))
        }
    };
    let timestamp = match &m.timestamp {
        Some(t) => {
            if !json {
                return Err((
                    "timestamp",
                    "a timestamp pointer needs \"format\": \"json\"".into(),
                ));
            }
            Some(t.compile().map_err(|(_, e)| ("timestamp", e))?)
        }
        None => None,
    };
    let paths = json.then(|| paths_of(&channels, timestamp.as_ref())).flatten();
    Ok(Compiled {
        name: m.topic.as_str().into(),
        pattern,
        device,
        json,
        paths,
        channels,
        timestamp,
    })
}

/// The parts of the payload the channels and the timestamp read, if no channel needs all of
/// it (every leaf, or the whole payload as one value).
fn paths_of(channels: &Channels, timestamp: Option<&TimeParser>) -> Option<JsonPaths> {
    let Channels::Listed(list) = channels else {
        return None;
    };
    let mut paths = JsonPaths::default();
    for c in list {
        match &c.pick {
            Pick::Pointer(p, _) => paths.add(p),
            Pick::Regex(..) => {}
            Pick::Whole(_) => return None,
        }
    }
    if let Some(t) = timestamp {
        paths.add(&t.pointer);
    }
    Some(paths)
}


/// Turns messages into readings of the listener's devices (see the module docs).
pub(super) struct Mapper {
    mappings: Vec<Compiled>,
    inputs: Vec<Input>,
    /// `telemetry/{gateway}`, `status/{gateway}`…: never taken in.
    own: [String; 4],
    max_payload: usize,
    ctx: ConnectorContext,
    caps: Captures,
    device_buf: String,
    channel_buf: String,
}

impl Mapper {
    /// A mapper of these mappings, each an input of its own (counted by its topic).
    pub(super) fn new(ctx: &ConnectorContext, mappings: Vec<Compiled>, max_payload: usize) -> Self {
        let names: Vec<Arc<str>> = mappings.iter().map(|m| m.name.clone()).collect();
        let gw = &ctx.gateway;
        Mapper {
            inputs: Input::all(ctx, &names),
            mappings,
            own: OWN_ROOTS.map(|r| format!("{r}/{gw}")),
            max_payload,
            ctx: ctx.clone(),
            caps: Captures::default(),
            device_buf: String::new(),
            channel_buf: String::new(),
        }
    }

    /// The first matching mapping turns `msg` into readings; a message of osgate's own topics,
    /// or of no mapping, is counted and skipped.
    pub(super) fn map(&mut self, msg: Publish, devices: &mut Devices) {
        let topic = msg.topic.as_str();
        if is_own(&self.own, topic) {
            self.ctx.health.counters.refused.fetch_add(1, Relaxed);
            tracing::debug!(connector = %self.ctx.name, topic, "osgate's own topic skipped");
            return;
        }
        let Some(mi) = self
            .mappings
            .iter()
            .position(|m| m.pattern.matches(topic, &mut self.caps))
        else {
            self.ctx.health.counters.unmatched.fetch_add(1, Relaxed);
            tracing::debug!(connector = %self.ctx.name, topic, "no mapping for this topic");
            return;
        };
        let m = &self.mappings[mi];
        let input = &mut self.inputs[mi];
        let ctx = &self.ctx;
        if msg.payload.len() > self.max_payload {
            let why = format!(
                "payload of {} bytes exceeds max_payload ({} bytes)",
                msg.payload.len(),
                self.max_payload
            );
            return input.bad(ctx, &m.name, &why);
        }
        let Ok(text) = std::str::from_utf8(&msg.payload) else {
            return input.bad(ctx, &m.name, "payload is not UTF-8 text");
        };
        m.device.render(topic, &self.caps, &mut self.device_buf);
        let Some(dev) = devices.find_or_create(&self.device_buf) else {
            return;
        };
        let doc = if m.json {
            let parsed = match &m.paths {
                Some(p) => p.parse(text),
                None => serde_json::from_str::<serde_json::Value>(text),
            };
            match parsed {
                Ok(d) => Some(d),
                Err(e) => return input.bad(ctx, &m.name, &format!("invalid JSON: {e}")),
            }
        } else {
            None
        };
        let ts = match (&m.timestamp, &doc) {
            (Some(t), Some(d)) => match t.get(d) {
                Ok(ts) => ts,
                Err(e) => return input.bad(ctx, &m.name, &e),
            },
            _ => Timestamp::now(),
        };
        let mut first_bad: Option<String> = None;
        match &m.channels {
            Channels::Listed(chans) => {
                for c in chans {
                    let name = match c.name.fixed() {
                        Some(n) => n,
                        None => {
                            c.name.render(topic, &self.caps, &mut self.channel_buf);
                            &self.channel_buf
                        }
                    };
                    let Some(ch) = devices.channel_or_add(dev, name, c.unit.as_ref(), &c.transform)
                    else {
                        continue;
                    };
                    match c.pick.get(text, doc.as_ref()) {
                        Ok(v) => devices.push(dev, ch, v, ts),
                        Err(e) => {
                            let reason: Arc<str> = format!("{name}: {e}").into();
                            first_bad.get_or_insert_with(|| reason.to_string());
                            devices.push_bad(dev, ch, reason, ts);
                        }
                    }
                }
            }
            Channels::Leaves { prefix } => {
                let prefix = prefix.as_ref().map(|p| {
                    p.render(topic, &self.caps, &mut self.channel_buf);
                    std::mem::take(&mut self.channel_buf)
                });
                let mut name = String::new();
                let identity = TransformConfig::default();
                let mut any = false;
                if let Some(d) = &doc {
                    leaves(d, &mut |path, v| {
                        any = true;
                        let n = match (&prefix, path.is_empty()) {
                            (Some(p), true) => p.as_str(),
                            (Some(p), false) => {
                                name.clear();
                                name.push_str(p);
                                name.push('.');
                                name.push_str(path);
                                &name
                            }
                            (None, _) => path,
                        };
                        if let Some(ch) = devices.channel_or_add(dev, n, None, &identity) {
                            devices.push(dev, ch, v, ts);
                        }
                    });
                }
                if let Some(p) = prefix {
                    self.channel_buf = p;
                }
                if !any {
                    first_bad = Some(
                        if prefix_is_needed(doc.as_ref()) {
                            "a bare value needs a channel name (\"channel\") in the mapping"
                        } else {
                            "no number or bool in the payload"
                        }
                        .into(),
                    );
                }
            }
        }
        match first_bad {
            None => input.good(ctx, &m.name),
            Some(why) => input.bad(ctx, &m.name, &why),
        }
    }
}

/// True when `topic` is one of osgate's own (`own`: `telemetry/{gateway}`, …).
pub(super) fn is_own(own: &[String], topic: &str) -> bool {
    own.iter().any(|o| {
        topic
            .strip_prefix(o.as_str())
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    })
}

fn prefix_is_needed(doc: Option<&serde_json::Value>) -> bool {
    matches!(
        doc,
        Some(serde_json::Value::Number(_) | serde_json::Value::Bool(_))
    )
}

