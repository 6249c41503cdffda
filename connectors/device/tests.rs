//! Tests of the device runtime itself, through small protocol halves written here: a [`Poller`]
//! whose behaviour the test switches at run time (good, some channels bad, every channel bad,
//! no answer, a panic), and a [`Listener`] fed by a channel. The connector context is the real
//! one: batches and status changes arrive on a sink queue as a sink would see them, requests go
//! through the [`ControlRegistry`] as JSON-RPC and MQTT commands do.
//!
//! Tests that wait out backoffs run on tokio's paused clock, so a 1 s backoff costs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::listener::{Devices, Listener, ListenerLine};
use super::*;
use osgate_core::control::ControlRegistry;
use osgate_core::pipeline::{sink_queue, Envelope, ReadingSender, WhenFull};
use osgate_core::reading::Quality;
use osgate_core::status::{ConnectorHealth, DeviceStatus};
use osgate_core::transform::TransformConfig;

/// Bound of every wait (on the paused clock too: a wait that can never end fails).
const WAIT: Duration = Duration::from_secs(20);

/// What the test poller's next poll does.
#[derive(Debug, Clone)]
enum Mode {
    /// Every due channel answers its current value.
    Good,
    /// These channels fail with "bad channel"; the others answer.
    Bad(Vec<usize>),
    /// No answer at all.
    Fault(&'static str),
    /// Panics once (the first poll that sees it), then behaves as `Good`.
    PanicOnce,
}

/// State shared by the test and every poller built for it (a rebuilt line gets a new poller).
#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    panicked: AtomicBool,
    polls: AtomicU32,
    /// Raw values the poller was asked to write: (channel, value).
    writes: Mutex<Vec<(usize, Value)>>,
}

impl Shared {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Shared {
            mode: Mutex::new(mode),
            panicked: AtomicBool::new(false),
            polls: AtomicU32::new(0),
            writes: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// The protocol half under the runtime: devices are vectors of raw values.
struct TestPoller(Arc<Shared>);

impl Poller for TestPoller {
    type Device = Vec<Value>;

    async fn poll(&mut self, dev: &mut Vec<Value>, poll: &mut Poll<'_>) -> Result<(), Fault> {
        self.0.polls.fetch_add(1, SeqCst);
        let mode = self.0.mode.lock().unwrap().clone();
        let ts = Timestamp::now();
        let bad: Vec<usize> = match mode {
            Mode::Fault(why) => return Err(Fault::new("test", why)),
            Mode::PanicOnce if !self.0.panicked.swap(true, SeqCst) => {
                panic!("boom in the poller")
            }
            Mode::Bad(chans) => chans,
            Mode::Good | Mode::PanicOnce => Vec::new(),
        };
        for ch in poll.due_channels() {
            if bad.contains(&ch) {
                poll.push_bad(ch, "bad channel".into(), ts);
            } else {
                poll.push(ch, dev[ch].clone(), ts);
            }
        }
        Ok(())
    }

    async fn write(
        &mut self,
        dev: &mut Vec<Value>,
        ch: usize,
        raw: Value,
    ) -> Result<Value, WriteError> {
        if raw.as_f64().is_some_and(|v| v > 90.0) {
            // The protocol knows the channel by its index only; the kit must name it.
            return Err(WriteError::Invalid("too big for the device".into()));
        }
        self.0.writes.lock().unwrap().push((ch, raw.clone()));
        dev[ch] = raw.clone();
        Ok(raw)
    }
}

/// A channel called `name`, with `transform` keys.
fn channel(name: &str, transform: TransformConfig) -> ChannelSpec<()> {
    ChannelSpec {
        name: name.into(),
        unit: None,
        transform: (!transform.is_identity()).then(|| Box::new(transform)),
        settings: (),
    }
}

/// Device `name`: `plain` (read-only), `scaled` (×2 + 1, writable within [1, 201]), `ro`
/// (read-only), raw values 10, 10, 7.
fn device(name: &str) -> (DeviceSpec<(), ()>, Vec<Value>) {
    let scaled = TransformConfig {
        scale: Some(2.0),
        offset: Some(1.0),
        ..TransformConfig::IDENTITY
    };
    let spec = DeviceSpec {
        name: name.into(),
        enabled: true,
        interval: Default::default(),
        settings: (),
        channels: vec![
            channel("plain", TransformConfig::IDENTITY),
            channel("scaled", scaled),
            channel("ro", TransformConfig::IDENTITY),
        ],
    };
    (spec, vec![Value::U64(10), Value::U64(10), Value::U64(7)])
}

/// `scaled` is writable (a float within [1, 201] in engineering units), the rest read-only.
fn writes(c: &ChannelSpec<()>) -> Option<WriteSpec> {
    (&*c.name == "scaled").then_some(WriteSpec {
        kind: ValueKind::Float,
        min: Some(1.0),
        max: Some(201.0),
    })
}

/// A connector context over a sink queue, and that queue.
struct Harness {
    ctx: ConnectorContext,
    rx: mpsc::Receiver<Envelope>,
}

impl Harness {
    /// Stops the connector and waits for `task` (a line, a listener, or `run_lines`) to end.
    async fn stop<T: std::fmt::Debug>(&self, task: tokio::task::JoinHandle<T>) {
        self.ctx.shutdown.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stopped in time")
            .expect("task ended without a panic");
    }

    fn new() -> Self {
        let (input, rx) = sink_queue(1024, WhenFull::Block, Arc::default());
        let ctx = ConnectorContext {
            name: "conn".into(),
            gateway: "gw".into(),
            out: ReadingSender::new(vec![input]),
            shutdown: CancellationToken::new(),
            health: Arc::new(ConnectorHealth::default()),
            control: Arc::new(ControlRegistry::default()),
            listeners: Default::default(),
        };
        Harness { ctx, rx }
    }

    async fn next(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an envelope in time")
            .expect("queue open")
    }

    /// The next status change of `device` that satisfies `f`.
    async fn status(&mut self, device: &str, f: impl Fn(&DeviceStatus) -> bool) -> DeviceStatus {
        loop {
            if let Envelope::Status(s) = self.next().await {
                if &*s.device == device && f(&s) {
                    return (*s).clone();
                }
            }
        }
    }

    /// The next batch of `device`.
    async fn batch(&mut self, device: &str) -> Vec<Reading> {
        loop {
            if let Envelope::Batch(b) = self.next().await {
                if &*b.device == device {
                    return b.readings.clone();
                }
            }
        }
    }

    /// The next batch of `device` whose readings are all good, by channel.
    async fn good_batch(&mut self, device: &str) -> HashMap<String, Value> {
        loop {
            let b = self.batch(device).await;
            if b.iter().all(|r| r.quality.is_good()) {
                return by_name(&b);
            }
        }
    }
}

/// A line of device `name` polled every `interval` through a poller on `shared`; after a failed
/// poll it retries after one interval.
fn line(
    ctx: &ConnectorContext,
    name: &str,
    interval: Duration,
    shared: &Arc<Shared>,
) -> Line<TestPoller> {
    let (spec, values) = device(name);
    let mut line =
        Line::new(ctx, TestPoller(shared.clone())).with_backoff(Backoff::new(interval, interval));
    line.add(
        &spec,
        Schedule::every(interval, spec.channels.len()),
        values,
        writes,
    );
    line
}

/// Awaits a request's answer, bounded.
async fn call<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("answer in time")
}

fn by_name(readings: &[Reading]) -> HashMap<String, Value> {
    readings
        .iter()
        .map(|r| (r.channel.to_string(), r.value.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_line_that_panics_is_reported_offline_and_rebuilt() {
    let mut h = Harness::new();
    let shared = Shared::new(Mode::PanicOnce);
    let interval = Duration::from_millis(100);
    let ctx = h.ctx.clone();
    let s2 = shared.clone();
    let lines =
        tokio::spawn(async move { run_lines(&ctx, 1, |_| line(&ctx, "p", interval, &s2)).await });
    let down = h.status("p", |s| s.health == Health::Offline).await;
    let panicked_at = tokio::time::Instant::now();
    let why = down.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("panicked") && why.contains("boom in the poller"),
        "{down:?}"
    );
    assert!(!down.online && down.errors >= 1, "{down:?}");
    assert_eq!(shared.polls.load(SeqCst), 1);
    // Rebuilt after the panic backoff (1 s), it polls again and comes back online.
    let got = h.good_batch("p").await;
    assert!(
        panicked_at.elapsed() >= PANIC_BACKOFF.clone().next_delay(),
        "rebuilt after {:?}",
        panicked_at.elapsed()
    );
    assert_eq!(got["plain"], Value::U64(10));
    let up = h.status("p", |s| s.health == Health::Online).await;
    assert!(up.online && up.last_error.is_none(), "{up:?}");
    assert!(shared.polls.load(SeqCst) >= 2);
    assert!(h.ctx.health.counters.errors.load(SeqCst) >= 1);
    // The rebuilt line serves requests too.
    let read = tokio::time::timeout(WAIT, h.ctx.control.read("conn", "p"))
        .await
        .expect("read in time")
        .expect("read");
    assert_eq!(by_name(&read)["scaled"], Value::F64(21.0));
    h.stop(lines).await;
}

#[tokio::test(start_paused = true)]
async fn health_follows_each_poll_online_degraded_offline_and_back() {
    let mut h = Harness::new();
    let shared = Shared::new(Mode::Good);
    let task = tokio::spawn(line(&h.ctx, "d", Duration::from_millis(100), &shared).run());

    let st = h.status("d", |s| s.health != Health::Unknown).await;
    assert_eq!(st.health, Health::Online, "{st:?}");
    assert!(
        st.online && st.running && st.enabled && st.last_error.is_none(),
        "{st:?}"
    );
    assert!(st.last_ok.is_some(), "{st:?}");

    // One channel of three fails: degraded, still online.
    shared.set(Mode::Bad(vec![1]));
    let st = h.status("d", |s| s.health != Health::Online).await;
    assert_eq!(
        (st.health, st.bad_channels),
        (Health::Degraded, 1),
        "{st:?}"
    );
    assert!(st.online, "{st:?}");
    assert_eq!(
        st.last_error.as_deref(),
        Some("1 of 3 channels failed: bad channel")
    );
    let b = h.batch("d").await;
    let q: HashMap<_, _> = b.iter().map(|r| (r.channel.to_string(), r)).collect();
    assert_eq!(q["scaled"].quality, Quality::Bad("bad channel".into()));
    assert!(q["plain"].quality.is_good() && q["ro"].quality.is_good());

    // Every channel fails: offline, with the reason alone.
    shared.set(Mode::Bad(vec![0, 1, 2]));
    let st = h.status("d", |s| s.health != Health::Degraded).await;
    assert_eq!(st.health, Health::Offline, "{st:?}");
    assert!(!st.online && st.bad_channels == 0, "{st:?}");
    assert_eq!(st.last_error.as_deref(), Some("bad channel"));

    // No answer at all: offline, with the fault's message.
    shared.set(Mode::Fault("no answer within 1s"));
    let st = h
        .status("d", |s| s.last_error.as_deref() != Some("bad channel"))
        .await;
    assert_eq!(st.health, Health::Offline, "{st:?}");
    assert_eq!(st.last_error.as_deref(), Some("no answer within 1s"));
    let errors = st.errors;

    // Answers again: online, the error cleared, the count kept.
    shared.set(Mode::Good);
    let st = h.status("d", |s| s.health != Health::Offline).await;
    assert_eq!(st.health, Health::Online, "{st:?}");
    assert!(
        st.online && st.last_error.is_none() && st.bad_channels == 0,
        "{st:?}"
    );
    assert!(st.errors >= errors && errors >= 3, "{st:?}");
    assert_eq!(h.good_batch("d").await["scaled"], Value::F64(21.0));
    h.stop(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_disabled_device_refuses_requests_and_is_not_polled() {
    let mut h = Harness::new();
    let shared = Shared::new(Mode::Good);
    let task = tokio::spawn(line(&h.ctx, "d", Duration::from_millis(100), &shared).run());
    h.good_batch("d").await;
    let control = h.ctx.control.clone();

    control.set_device_enabled("conn", "d", false).unwrap();
    let st = h.status("d", |s| !s.enabled).await;
    assert!(
        !st.running && !st.online && st.health == Health::Unknown,
        "{st:?}"
    );
    let polls = shared.polls.load(SeqCst);
    assert_eq!(
        control.write("conn", "d", "scaled", json!(5)).await,
        Err(DeviceError::Disabled("d".into()))
    );
    assert!(matches!(
        control.read("conn", "d").await,
        Err(DeviceError::Disabled(_))
    ));
    // Ten intervals later (paused clock): no poll, no batch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(shared.polls.load(SeqCst), polls, "polled while disabled");
    while let Ok(env) = h.rx.try_recv() {
        assert!(
            !matches!(env, Envelope::Batch(_)),
            "a batch while disabled: {env:?}"
        );
    }
    assert!(shared.writes.lock().unwrap().is_empty());

    // Enabled again, it polls at once.
    control.set_device_enabled("conn", "d", true).unwrap();
    let st = h.status("d", |s| s.enabled && s.running).await;
    assert!(st.enabled, "{st:?}");
    h.good_batch("d").await;
    assert!(shared.polls.load(SeqCst) > polls);
    h.stop(task).await;
}

#[tokio::test]
async fn device_read_and_write_go_through_the_transforms_and_checks() {
    let mut h = Harness::new();
    let shared = Shared::new(Mode::Good);
    // One scheduled poll at start, the next in an hour: every later reading is from a request.
    let task = tokio::spawn(line(&h.ctx, "d", Duration::from_secs(3600), &shared).run());
    h.good_batch("d").await;
    let control = h.ctx.control.clone();

    // device.read: values through the value steps (×2 + 1), nothing sent to the sinks.
    let read = call(control.read("conn", "d")).await.expect("read");
    let r = by_name(&read);
    assert_eq!(r["plain"], Value::U64(10));
    assert_eq!(r["scaled"], Value::F64(21.0));
    assert_eq!(r["ro"], Value::U64(7));
    assert!(read.iter().all(|r| r.quality.is_good()), "{read:?}");

    // Refusals, each before the poller sees anything.
    assert_eq!(
        call(control.write("conn", "d", "ro", json!(1))).await,
        Err(DeviceError::NotWritable("ro".into()))
    );
    assert_eq!(
        call(control.write("conn", "d", "nope", json!(1))).await,
        Err(DeviceError::UnknownChannel {
            device: "d".into(),
            channel: "nope".into()
        })
    );
    match call(control.write("conn", "d", "scaled", json!(250))).await {
        Err(DeviceError::OutOfRange { channel, reason }) => {
            assert_eq!(channel, "scaled");
            assert!(reason.contains("[1, 201]"), "{reason}");
        }
        other => panic!("250 accepted: {other:?}"),
    }
    assert!(matches!(
        call(control.write("conn", "d", "scaled", json!("high"))).await,
        Err(DeviceError::OutOfRange { .. })
    ));
    assert!(shared.writes.lock().unwrap().is_empty());

    // Accepted: unscaled for the device ((42 - 1) / 2 = 20.5), answered in engineering units.
    assert_eq!(
        call(control.write("conn", "d", "scaled", json!(42))).await,
        Ok(json!(42.0))
    );
    assert_eq!(*shared.writes.lock().unwrap(), [(1, Value::F64(20.5))]);
    let read = call(control.read("conn", "d")).await.expect("read");
    assert_eq!(by_name(&read)["scaled"], Value::F64(42.0));

    // The device refuses a raw value (199 → 99 raw; the test device takes up to 90) and names
    // the channel by its index: the kit names it as configured.
    match call(control.write("conn", "d", "scaled", json!(199))).await {
        Err(DeviceError::OutOfRange { channel, reason }) => {
            assert_eq!(channel, "scaled");
            assert_eq!(reason, "too big for the device");
        }
        other => panic!("199 accepted: {other:?}"),
    }
    assert_eq!(shared.writes.lock().unwrap().len(), 1);

    // A read of a device that does not answer fails with the reason.
    shared.set(Mode::Fault("no answer"));
    match call(control.read("conn", "d")).await {
        Err(DeviceError::Offline(dev, why)) => {
            assert_eq!((dev.as_str(), why.as_str()), ("d", "no answer"));
        }
        other => panic!("a failed read answered {other:?}"),
    }
    // Nothing reached the sinks from the requests.
    while let Ok(env) = h.rx.try_recv() {
        assert!(!matches!(env, Envelope::Batch(_)), "{env:?}");
    }
    h.stop(task).await;
}

/// What the test listener receives: `(device, channel, value or failure)`s, or the
/// connection's failure.
type ListenerMsg = Result<Vec<(&'static str, &'static str, Option<f64>)>, Fault>;

/// A listener fed by a channel of [`ListenerMsg`]s.
struct TestListener {
    rx: mpsc::Receiver<ListenerMsg>,
    writes: Arc<Mutex<Vec<(usize, usize, Value)>>>,
}

impl Listener for TestListener {
    type Msg = Vec<(&'static str, &'static str, Option<f64>)>;

    async fn next(&mut self) -> Result<Self::Msg, Fault> {
        match self.rx.recv().await {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }

    fn map(&mut self, msg: Self::Msg, devices: &mut Devices) {
        let ts = Timestamp::now();
        for (dev, ch, v) in msg {
            let Some(d) = devices.find(dev) else { continue };
            let Some(c) = devices.channel(d, ch) else {
                continue;
            };
            match v {
                Some(v) => devices.push(d, c, Value::F64(v), ts),
                None => devices.push_bad(d, c, "sensor failure".into(), ts),
            }
        }
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        self.writes.lock().unwrap().push((device, ch, raw.clone()));
        Ok(raw)
    }
}

#[tokio::test(start_paused = true)]
async fn a_listener_turns_messages_into_batches_and_a_lost_connection_into_offline() {
    let mut h = Harness::new();
    let (tx, rx) = mpsc::channel(8);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut line = ListenerLine::new(
        &h.ctx,
        TestListener {
            rx,
            writes: sent.clone(),
        },
    )
    .with_backoff(Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(100),
    ));
    let (a, _) = device("a");
    let (b, _) = device("b");
    line.add(&a, writes);
    line.add(&b, writes);
    let task = tokio::spawn(line.run());

    // A message becomes a batch of the device it names, through the transforms.
    tx.send(Ok(vec![
        ("a", "plain", Some(1.5)),
        ("a", "scaled", Some(10.0)),
    ]))
    .await
    .unwrap();
    let got = by_name(&h.batch("a").await);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["plain"], Value::F64(1.5));
    assert_eq!(got["scaled"], Value::F64(21.0));
    let st = h.status("a", |s| s.health != Health::Unknown).await;
    assert_eq!(st.health, Health::Online, "{st:?}");

    // Some channels bad: degraded.
    tx.send(Ok(vec![("b", "plain", Some(2.0)), ("b", "ro", None)]))
        .await
        .unwrap();
    let st = h.status("b", |s| s.health != Health::Unknown).await;
    assert_eq!(
        (st.health, st.bad_channels),
        (Health::Degraded, 1),
        "{st:?}"
    );
    assert_eq!(
        st.last_error.as_deref(),
        Some("1 of 2 channels failed: sensor failure")
    );

    // The connection drops: every device offline with the reason.
    tx.send(Err(Fault::new("io", "connection reset by broker")))
        .await
        .unwrap();
    for dev in ["a", "b"] {
        let st = h.status(dev, |s| s.health == Health::Offline).await;
        assert_eq!(
            st.last_error.as_deref(),
            Some("connection reset by broker"),
            "{st:?}"
        );
        assert!(!st.online, "{st:?}");
    }

    // Messages again (after the backoff): online again.
    tx.send(Ok(vec![("a", "plain", Some(3.0))])).await.unwrap();
    let st = h.status("a", |s| s.health == Health::Online).await;
    assert!(st.online && st.last_error.is_none(), "{st:?}");

    // Writes are checked and unscaled by the kit; a listener cannot be read on demand.
    let control = h.ctx.control.clone();
    assert_eq!(
        control.write("conn", "b", "scaled", json!(5)).await,
        Ok(json!(5.0))
    );
    assert_eq!(*sent.lock().unwrap(), [(1, 1, Value::F64(2.0))]);
    assert_eq!(
        control.write("conn", "b", "plain", json!(5)).await,
        Err(DeviceError::NotWritable("plain".into()))
    );
    assert!(matches!(
        control.read("conn", "a").await,
        Err(DeviceError::Failed(_))
    ));
    h.stop(task).await;
}

/// A listener line of device "a" whose `plain` channel reports on change with a heartbeat.
fn heartbeat_line(h: &Harness) -> (ListenerLine<TestListener>, mpsc::Sender<ListenerMsg>) {
    let (tx, rx) = mpsc::channel(8);
    let mut line = ListenerLine::new(
        &h.ctx,
        TestListener {
            rx,
            writes: Arc::default(),
        },
    );
    let (mut a, _) = device("a");
    a.channels[0] = channel(
        "plain",
        TransformConfig {
            report: Some(osgate_core::transform::Report::OnChange),
            heartbeat: Some(osgate_core::config::Dur::from_secs(1)),
            ..TransformConfig::IDENTITY
        },
    );
    line.add(&a, writes);
    (line, tx)
}

#[tokio::test(start_paused = true)]
async fn a_disabled_listener_device_sends_nothing_not_even_heartbeats() {
    let mut h = Harness::new();
    let (line, tx) = heartbeat_line(&h);
    let task = tokio::spawn(line.run());
    tx.send(Ok(vec![("a", "plain", Some(1.0))])).await.unwrap();
    assert_eq!(by_name(&h.batch("a").await)["plain"], Value::F64(1.0));
    // Enabled, the heartbeat repeats the quiet value.
    assert_eq!(by_name(&h.batch("a").await)["plain"], Value::F64(1.0));

    h.ctx
        .control
        .set_device_enabled("conn", "a", false)
        .unwrap();
    h.status("a", |s| !s.enabled).await;
    // Five heartbeat periods later (paused clock): nothing from the disabled device.
    tokio::time::sleep(Duration::from_secs(5)).await;
    while let Ok(env) = h.rx.try_recv() {
        assert!(
            !matches!(env, Envelope::Batch(_)),
            "a batch from a disabled device: {env:?}"
        );
    }
    h.stop(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_disabled_listener_device_keeps_no_bad_channels() {
    let mut h = Harness::new();
    let (line, tx) = heartbeat_line(&h);
    let task = tokio::spawn(line.run());
    tx.send(Ok(vec![("a", "plain", Some(2.0)), ("a", "ro", None)]))
        .await
        .unwrap();
    let st = h.status("a", |s| s.health == Health::Degraded).await;
    assert_eq!(st.bad_channels, 1, "{st:?}");
    h.ctx
        .control
        .set_device_enabled("conn", "a", false)
        .unwrap();
    let st = h.status("a", |s| !s.enabled).await;
    // As a disabled polled device reports: health unknown, no failed channels.
    assert_eq!((st.health, st.bad_channels), (Health::Unknown, 0), "{st:?}");
    h.stop(task).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicked_line_is_not_reported_running_while_it_waits_to_restart() {
    let mut h = Harness::new();
    let shared = Shared::new(Mode::PanicOnce);
    let interval = Duration::from_millis(100);
    let ctx = h.ctx.clone();
    let s2 = shared.clone();
    let lines =
        tokio::spawn(async move { run_lines(&ctx, 1, |_| line(&ctx, "p", interval, &s2)).await });
    let down = h.status("p", |s| s.health == Health::Offline).await;
    // DeviceStatus::running: "true only while the device's task is actually running"; during
    // the panic backoff no task serves the device.
    assert!(!down.running, "{down:?}");
    let up = h.status("p", |s| s.health == Health::Online).await;
    assert!(up.running, "{up:?}");
    h.stop(lines).await;
}

/// A listener whose devices and channels are created from its messages.
struct DynListener(mpsc::Receiver<ListenerMsg>);

impl Listener for DynListener {
    type Msg = Vec<(&'static str, &'static str, Option<f64>)>;

    async fn next(&mut self) -> Result<Self::Msg, Fault> {
        match self.0.recv().await {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }

    fn map(&mut self, msg: Self::Msg, devices: &mut Devices) {
        let ts = Timestamp::now();
        let unit: Arc<str> = "W".into();
        for (dev, ch, v) in msg {
            let Some(d) = devices.find_or_create(dev) else {
                continue;
            };
            let Some(c) = devices.channel_or_add(d, ch, Some(&unit), &TransformConfig::default())
            else {
                continue;
            };
            if let Some(v) = v {
                devices.push(d, c, Value::F64(v), ts);
            }
        }
    }

    async fn write(&mut self, _: usize, _: usize, raw: Value) -> Result<Value, WriteError> {
        Ok(raw)
    }
}

#[tokio::test(start_paused = true)]
async fn a_listener_creates_devices_up_to_its_maximum_and_takes_quiet_ones_offline() {
    let mut h = Harness::new();
    let (tx, rx) = mpsc::channel(8);
    let mut line = ListenerLine::new(&h.ctx, DynListener(rx))
        .accept_new(1)
        .with_stale_after(Some(Duration::from_secs(1)));
    let (a, _) = device("a");
    line.add(&a, writes);
    let task = tokio::spawn(line.run());

    // A configured device gains a channel it did not list; a new device is created with it.
    tx.send(Ok(vec![("a", "extra", Some(1.0)), ("new", "p", Some(2.0))]))
        .await
        .unwrap();
    let got = h.batch("a").await;
    assert_eq!(
        (&*got[0].channel, got[0].unit.as_deref()),
        ("extra", Some("W"))
    );
    let got = h.batch("new").await;
    assert_eq!(got[0].value, Value::F64(2.0));
    // Beyond the maximum: refused and counted; bad names too.
    tx.send(Ok(vec![
        ("third", "p", Some(3.0)),
        ("new", "a/b", Some(4.0)),
    ]))
    .await
    .unwrap();
    tx.send(Ok(vec![("new", "p", Some(5.0))])).await.unwrap();
    let got = h.batch("new").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, Value::F64(5.0));
    assert_eq!(h.ctx.health.counters.refused.load(Relaxed), 2);
    assert!(h.ctx.control.device_enabled("conn", "third").is_none());
    // The new device is under run-time control like a configured one.
    assert_eq!(h.ctx.control.device_enabled("conn", "new"), Some(true));

    // Quiet for stale_after: offline with the reason, back online with the next message.
    let st = h.status("new", |s| s.health == Health::Offline).await;
    assert_eq!(st.last_error.as_deref(), Some("no message for 1s"));
    tx.send(Ok(vec![("new", "p", Some(6.0))])).await.unwrap();
    let st = h.status("new", |s| s.health == Health::Online).await;
    assert!(st.online, "{st:?}");
    h.stop(task).await;
}

#[tokio::test]
async fn devices_of_one_model_on_a_line_share_their_channel_lists() {
    let h = Harness::new();
    let shared = Shared::new(Mode::Good);
    let mut line = Line::new(&h.ctx, TestPoller(shared));
    let second = Duration::from_secs(1);
    for name in ["a", "b", "c"] {
        let (spec, values) = device(name);
        let n = spec.channels.len();
        // `c` reads its last channel at an interval of its own: two groups, one list new.
        let own = (0..n).map(|c| (name == "c" && c == n - 1).then_some(second * 5));
        line.add(&spec, Schedule::new(second, own), values, writes);
    }
    let lists = |d: usize| -> Vec<&Arc<[u32]>> {
        line.devices[d].groups.iter().map(|g| &g.channels).collect()
    };
    let (a, b, c) = (lists(0), lists(1), lists(2));
    assert!(
        Arc::ptr_eq(a[0], b[0]),
        "a and b keep two copies of one list"
    );
    assert_eq!((a.len(), c.len()), (1, 2));
    assert_ne!(a[0], c[0]);
    assert_eq!(c[1][..], [b[0].len() as u32 - 1]);
}

#[test]
fn devices_are_dealt_to_lines_of_at_most_the_maximum() {
    assert_eq!(split_lines(0, 100, 2), (0, 0));
    assert_eq!(split_lines(1, 100, 2), (1, 1));
    assert_eq!(split_lines(3, 100, 2), (2, 2));
    assert_eq!(split_lines(10, 100, 1), (1, 10));
    // At least one line per worker thread, so load generation uses every core.
    assert_eq!(split_lines(50, 100, 2), (2, 25));
    assert_eq!(split_lines(1000, 100, 2), (10, 100));
    assert_eq!(split_lines(1001, 100, 2), (11, 91));
    for (n, w) in [(1, 1), (7, 4), (99, 2), (101, 1), (1000, 16), (12345, 2)] {
        let (lines, per) = split_lines(n, 100, w);
        assert!(per <= 100, "{n} on {w}: {per} per line");
        assert!(
            (lines - 1) * per < n && n <= lines * per,
            "{n} on {w}: no line empty"
        );
    }
}

#[test]
fn devices_of_one_peer_are_dealt_to_its_connections_in_turn() {
    assert_eq!(connection_lines(5, 2), [vec![0, 2, 4], vec![1, 3]]);
    assert_eq!(connection_lines(2, 8), [vec![0], vec![1]]);
    assert_eq!(connection_lines(3, 1), [vec![0, 1, 2]]);
    assert_eq!(connection_lines(3, 0), [vec![0, 1, 2]]);
    // No devices: one idle line, as a connector with none yet.
    assert_eq!(connection_lines(0, 4), [Vec::<usize>::new()]);
}
