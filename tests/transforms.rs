//! Channel transforms: config shapes and errors, value steps, report strategies (property tests
//! and paused-time tests), and end to end through the simulator and the MQTT sink.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use osgate::config::{ChannelSpec, DeviceSpec};
use osgate::pipeline::{sink_queue, DeviceOutput, Envelope, ReadingSender, WhenFull};
use osgate::reading::{Quality, Reading, Timestamp, Value};
use osgate::status::ConnectorHealth;
use osgate::transform::{
    round_to, Deadband, FilterAction, Outcome, RateConfig, Report, Transform, TransformConfig,
};
use proptest::prelude::*;
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;

fn cfg(v: serde_json::Value) -> TransformConfig {
    serde_json::from_value(v).expect("transform config")
}

fn tf(v: serde_json::Value) -> Transform {
    Transform::new(&cfg(v)).expect("valid transform")
}

fn reading(value: Value, ts: i64) -> Reading {
    Reading {
        device: "d".into(),
        channel: "c".into(),
        value,
        ts: Timestamp(ts),
        quality: Quality::Good,
        unit: Some("V".into()),
    }
}

fn f(v: f64) -> Value {
    Value::F64(v)
}

#[track_caller]
fn emitted(o: Outcome) -> Reading {
    match o {
        Outcome::Emit(r) => r,
        other => panic!("expected Emit, got {other:?}"),
    }
}

fn is_bad_with(r: &Reading, needle: &str) -> bool {
    matches!(&r.quality, Quality::Bad(why) if why.contains(needle))
}

// ---------------------------------------------------------------- config shapes and errors

#[test]
fn config_shapes_parse() {
    let c = cfg(json!({"deadband": 0.5}));
    assert_eq!(c.deadband, Some(Deadband::Absolute(0.5)));
    assert_eq!(c.effective_report(), Report::OnChange);
    let c = cfg(json!({"deadband": "2%", "report": "on_change", "heartbeat": "30s"}));
    assert_eq!(c.deadband, Some(Deadband::Percent(2.0)));
    let c = cfg(json!({"report": {"every": "5m"}}));
    assert_eq!(
        c.report,
        Some(Report::Every(osgate::config::Dur::from_secs(300)))
    );
    let c = cfg(json!({"filter": {"min": 0, "max": 100, "action": "bad"}}));
    let fl = c.filter.unwrap();
    assert_eq!(
        (fl.min, fl.max, fl.action),
        (Some(0.0), Some(100.0), FilterAction::Bad)
    );
    assert_eq!(
        cfg(json!({"filter": {"max": 1}})).filter.unwrap().action,
        FilterAction::Drop
    );
    assert_eq!(cfg(json!({"rate": true})).rate, Some(RateConfig::default()));
    assert_eq!(cfg(json!({"rate": false})).rate, None);
    let r = cfg(json!({"rate": {"per": "1h", "wrap": 65536}}))
        .rate
        .unwrap();
    assert_eq!(r.per.0, Duration::from_secs(3600));
    assert_eq!(r.wrap, Some(65536.0));
    // Round trip through JSON keeps the user's shapes.
    let c = cfg(json!({"deadband": "2%", "report": {"every": "1m"}, "rate": true}));
    let back = serde_json::to_value(&c).unwrap();
    assert_eq!(back["deadband"], "2%");
    assert_eq!(cfg(back), c);
}

#[test]
fn config_rejects_nonsense_with_the_field_named() {
    let cases = [
        (json!({"deadband": -1}), "deadband", "≥ 0"),
        (json!({"deadband": "5"}), "", "percentage"),
        (
            json!({"deadband": 1, "report": "always"}),
            "deadband",
            "on_change",
        ),
        (
            json!({"deadband": 1, "report": {"every": "1s"}}),
            "deadband",
            "every",
        ),
        (json!({"heartbeat": "5s"}), "heartbeat", "on_change"),
        (
            json!({"heartbeat": "5s", "report": {"every": "1s"}}),
            "heartbeat",
            "on_change",
        ),
        (
            json!({"report": "on_change", "heartbeat": "0s"}),
            "heartbeat",
            "longer than 0",
        ),
        (
            json!({"report": {"every": "0s"}}),
            "report.every",
            "longer than 0",
        ),
        (json!({"scale": 0}), "scale", "other than 0"),
        (json!({"round": 16}), "round", "0 to 15"),
        (json!({"filter": {}}), "filter", "min"),
        (
            json!({"filter": {"min": 5, "max": 1}}),
            "filter.max",
            "≥ min",
        ),
        (
            json!({"filter": {"min": 0, "action": "clamp"}}),
            "",
            "unknown variant",
        ),
        (json!({"rate": {"per": "0s"}}), "rate.per", "longer than 0"),
        (json!({"rate": {"wrap": -1}}), "rate.wrap", "> 0"),
        (json!({"rate": {"every": "1s"}}), "", "unknown field"),
        (
            json!({"expr": "(x - 32 / 1.8"}),
            "expr",
            "invalid expression",
        ),
        (json!({"expr": "x * y"}), "expr", "unknown name(s) y"),
        (json!({"expr": "42"}), "expr", "does not use the value x"),
    ];
    for (v, field, needle) in cases {
        let problem = match serde_json::from_value::<TransformConfig>(v.clone()) {
            Err(e) => (String::new(), e.to_string()),
            Ok(c) => Transform::new(&c)
                .err()
                .unwrap_or_else(|| panic!("{v} was accepted")),
        };
        assert_eq!(problem.0, field, "{v}: {problem:?}");
        assert!(problem.1.contains(needle), "{v}: {problem:?}");
    }
}

#[test]
fn only_scale_and_offset_are_reversible_for_writes() {
    assert_eq!(
        cfg(json!({"scale": 0.1, "offset": 3, "round": 1})).irreversible_key(),
        None
    );
    assert_eq!(
        cfg(json!({"expr": "x * 2"})).irreversible_key(),
        Some("expr")
    );
    assert_eq!(cfg(json!({"rate": true})).irreversible_key(), Some("rate"));
}

#[test]
fn expr_errors_are_config_errors_with_the_full_path() {
    let v = json!({"gateway": {"id": "g"}, "sinks": [{"name": "o", "type": "stdout"}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": [{"name": "d",
            "channels": [{"name": "a", "signal": "sine"}, {"name": "b", "signal": "sine"},
                {"name": "t", "signal": "sine", "expr": "(x - 32) / 1.8 +"}]}]}]});
    let errs = osgate::config::from_value(v, &|_| None).expect_err("bad expr rejected");
    let text = errs.to_string();
    assert!(
        text.contains("connectors[0] \"sim\".devices[0].channels[2].expr: invalid expression"),
        "{text}"
    );
    // Every problem of a channel's transform is reported, each at its place.
    let v = json!({"gateway": {"id": "g"}, "sinks": [{"name": "o", "type": "stdout"}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": [{"name": "d",
            "channels": [{"name": "a", "signal": "sine", "scale": 0, "heartbeat": "1s",
                "filter": {"min": 2, "max": 1}}]}]}]});
    let errs = osgate::config::from_value(v, &|_| None).expect_err("rejected");
    let p = "connectors[0] \"sim\".devices[0].channels[0]";
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    for field in ["scale", "heartbeat", "filter.max"] {
        assert!(
            paths.contains(&format!("{p}.{field}").as_str()),
            "{field}: {errs}"
        );
    }
}

// ---------------------------------------------------------------- value steps

#[test]
fn scale_offset_round_and_order_of_steps() {
    let t0 = Instant::now();
    let mut t = tf(json!({"scale": 0.1, "offset": -40, "round": 1}));
    let r = emitted(t.apply(reading(Value::U64(653), 7), t0));
    assert_eq!(r.value, f(25.3));
    assert_eq!((r.ts, r.quality.clone()), (Timestamp(7), Quality::Good));
    // expr runs after scale/offset, round after expr.
    let mut t = tf(json!({"scale": 10, "expr": "(x - 32) / 1.8", "round": 2}));
    assert_eq!(emitted(t.apply(reading(f(21.2), 1), t0)).value, f(100.0));
    let mut t = tf(json!({"expr": "max(x, 0) + sqrt(4)"}));
    assert_eq!(emitted(t.apply(reading(f(-3.0), 1), t0)).value, f(2.0));
}

#[test]
fn integers_stay_integers_unless_a_step_changes_them() {
    let t0 = Instant::now();
    let mut t = tf(json!({"deadband": 2, "round": 1, "filter": {"max": 1e30}}));
    let big = u64::MAX - 5;
    assert_eq!(
        emitted(t.apply(reading(Value::U64(big), 1), t0)).value,
        Value::U64(big)
    );
    // A change of 2 on a huge counter is seen exactly (no f64 rounding of u64 values).
    assert_eq!(
        t.apply(reading(Value::U64(big + 2), 2), t0),
        Outcome::Suppressed
    );
    assert_eq!(
        emitted(t.apply(reading(Value::U64(big + 5), 3), t0)).value,
        Value::U64(big + 5)
    );
    let mut t = tf(json!({"report": "on_change"}));
    assert_eq!(
        emitted(t.apply(reading(Value::I64(-4), 1), t0)).value,
        Value::I64(-4)
    );
    let mut t = tf(json!({"scale": 2}));
    assert_eq!(
        emitted(t.apply(reading(Value::I64(-4), 1), t0)).value,
        f(-8.0)
    );
}

#[test]
fn bool_and_text_on_numeric_steps_are_bad_and_on_report_steps_work() {
    let t0 = Instant::now();
    let mut t = tf(json!({"scale": 2}));
    for v in [Value::Bool(true), Value::Text("on".into())] {
        let r = emitted(t.apply(reading(v.clone(), 1), t0));
        assert_eq!(r.value, v, "value passes through unchanged");
        assert!(is_bad_with(&r, "bool or text"), "{r:?}");
    }
    // A deadband does not apply to bools or text: any change is a change.
    let mut t = tf(json!({"deadband": 5}));
    let seq = [true, true, false, false, true];
    let sent: Vec<bool> = seq
        .iter()
        .filter_map(|b| match t.apply(reading(Value::Bool(*b), 1), t0) {
            Outcome::Emit(r) => Some(r.value == Value::Bool(true)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![true, false, true]);
    let mut t = tf(json!({"report": "on_change"}));
    assert!(matches!(
        t.apply(reading(Value::Text("a".into()), 1), t0),
        Outcome::Emit(_)
    ));
    assert_eq!(
        t.apply(reading(Value::Text("a".into()), 2), t0),
        Outcome::Suppressed
    );
    assert!(matches!(
        t.apply(reading(Value::Text("b".into()), 3), t0),
        Outcome::Emit(_)
    ));
}

#[test]
fn nan_and_infinity_are_bad_and_never_poison_the_deadband() {
    let t0 = Instant::now();
    let mut t = tf(json!({"deadband": 1}));
    assert!(matches!(t.apply(reading(f(10.0), 1), t0), Outcome::Emit(_)));
    let r = emitted(t.apply(reading(f(f64::NAN), 2), t0));
    assert!(is_bad_with(&r, "NaN or infinite"), "{r:?}");
    assert_eq!(r.ts, Timestamp(2));
    // Same bad reason again: no news under on_change.
    for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        assert_eq!(t.apply(reading(f(bad), 3), t0), Outcome::Suppressed);
    }
    let mut always = tf(json!({"scale": 1}));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let r = emitted(always.apply(reading(f(bad), 2), t0));
        assert!(is_bad_with(&r, "NaN or infinite"), "{r:?}");
    }
    // Good again: reported even though within the deadband of the last good value...
    let r = emitted(t.apply(reading(f(10.5), 4), t0));
    assert!(r.quality.is_good());
    // ...and the reference is the good value, not NaN.
    assert_eq!(t.apply(reading(f(11.4), 5), t0), Outcome::Suppressed);
    assert!(matches!(t.apply(reading(f(11.6), 6), t0), Outcome::Emit(_)));
    // Even the identity transform does not publish NaN as good.
    let mut t = tf(json!({}));
    assert!(is_bad_with(
        &emitted(t.apply(reading(f(f64::NAN), 1), t0)),
        "NaN"
    ));
    // A reading that is already bad keeps its own reason.
    let mut t = tf(json!({"scale": 2}));
    let mut r = reading(f(f64::NAN), 1);
    r.quality = Quality::Bad("timeout".into());
    assert_eq!(
        emitted(t.apply(r, t0)).quality,
        Quality::Bad("timeout".into())
    );
    // A result that is not finite is bad too.
    let mut t = tf(json!({"expr": "1 / x"}));
    assert!(is_bad_with(
        &emitted(t.apply(reading(f(0.0), 1), t0)),
        "result"
    ));
}

#[test]
fn filter_drops_or_marks_bad() {
    let t0 = Instant::now();
    let mut t = tf(json!({"filter": {"min": 0, "max": 100}}));
    assert_eq!(t.apply(reading(f(-1.0), 1), t0), Outcome::Filtered);
    assert_eq!(t.apply(reading(f(100.5), 1), t0), Outcome::Filtered);
    assert_eq!(emitted(t.apply(reading(f(100.0), 1), t0)).value, f(100.0));
    let mut t = tf(json!({"filter": {"max": 100, "action": "bad"}, "deadband": 1}));
    assert!(matches!(t.apply(reading(f(50.0), 1), t0), Outcome::Emit(_)));
    let r = emitted(t.apply(reading(f(120.0), 2), t0));
    assert_eq!(r.value, f(120.0));
    assert!(is_bad_with(&r, "above filter max 100"), "{r:?}");
    // The out-of-range value is not the deadband reference: 50.5 is back to good, reported.
    assert!(emitted(t.apply(reading(f(50.5), 3), t0)).quality.is_good());
    assert_eq!(t.apply(reading(f(51.0), 4), t0), Outcome::Suppressed);
}

#[test]
fn rate_handles_baseline_wrap_reset_and_bad_values() {
    let t0 = Instant::now();
    let mut t = tf(json!({"rate": {"wrap": 65536}}));
    assert_eq!(
        t.apply(reading(Value::U64(65000), 0), t0),
        Outcome::Suppressed
    );
    // +536 to the wrap, then +64: 600 in 2 s.
    assert_eq!(
        emitted(t.apply(reading(Value::U64(64), 2000), t0)).value,
        f(300.0)
    );
    // NaN is bad and does not replace the baseline (64 at 2 s).
    assert!(is_bad_with(
        &emitted(t.apply(reading(f(f64::NAN), 3000), t0)),
        "NaN"
    ));
    assert_eq!(
        emitted(t.apply(reading(Value::U64(164), 4000), t0)).value,
        f(50.0)
    );
    // A big drop is a reset (device restart): no value, new baseline.
    assert_eq!(
        t.apply(reading(Value::U64(3), 5000), t0),
        Outcome::Suppressed
    );
    assert_eq!(
        emitted(t.apply(reading(Value::U64(13), 5500), t0)).value,
        f(20.0)
    );
    // Per hour, after scaling (Wh pulses of 0.5 → W).
    let mut t = tf(json!({"scale": 0.5, "rate": {"per": "1h"}}));
    assert_eq!(t.apply(reading(Value::U64(0), 0), t0), Outcome::Suppressed);
    assert_eq!(
        emitted(t.apply(reading(Value::U64(20), 36_000), t0)).value,
        f(1000.0)
    );
    // Without wrap every drop is a reset; no time between readings gives no rate.
    let mut t = tf(json!({"rate": true}));
    assert_eq!(t.apply(reading(f(10.0), 1000), t0), Outcome::Suppressed);
    assert_eq!(t.apply(reading(f(5.0), 2000), t0), Outcome::Suppressed);
    assert_eq!(t.apply(reading(f(6.0), 2000), t0), Outcome::Suppressed);
    assert_eq!(emitted(t.apply(reading(f(7.5), 3000), t0)).value, f(1.5));
}

#[test]
fn convert_runs_value_steps_without_state() {
    let t0 = Instant::now();
    let mut t = tf(json!({"scale": 2, "deadband": 100, "filter": {"max": 10}}));
    assert_eq!(t.convert(reading(f(3.0), 1)).value, f(6.0));
    assert!(is_bad_with(
        &t.convert(reading(f(6.0), 1)),
        "above filter max"
    ));
    // convert does not touch the report state: the first apply is still reported.
    assert!(matches!(t.apply(reading(f(1.0), 1), t0), Outcome::Emit(_)));
    let t = tf(json!({"rate": true}));
    assert!(is_bad_with(&t.convert(reading(f(1.0), 1)), "no rate"));
}

// ---------------------------------------------------------------- property tests

/// Feeds `values` at `interval_ms` through `t`; returns the reported (time ms, value).
fn run_seq(t: &mut Transform, values: &[f64], interval_ms: u64) -> Vec<(u64, f64)> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let ms = i as u64 * interval_ms;
        let at = t0 + Duration::from_millis(ms);
        if let Outcome::Emit(r) = t.apply(reading(f(*v), ms as i64), at) {
            out.push((ms, r.value.as_f64().unwrap()));
        }
    }
    out
}

fn walk(steps: &[f64], start: f64) -> Vec<f64> {
    steps
        .iter()
        .scan(start, |x, s| {
            *x += s;
            Some(*x)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// on_change + deadband d: consecutive reported values differ by more than d, and every
    /// value that was not reported is within d of the last reported one.
    #[test]
    fn deadband_reports_exactly_the_moves_beyond_d(
        steps in prop::collection::vec(-2.0f64..2.0, 1..300),
        d in 0.0f64..3.0,
    ) {
        let values = walk(&steps, 0.0);
        let mut t = tf(json!({"report": "on_change", "deadband": d}));
        let sent = run_seq(&mut t, &values, 100);
        prop_assert_eq!(sent[0].1, values[0]);
        for w in sent.windows(2) {
            prop_assert!((w[1].1 - w[0].1).abs() > d, "{:?} within {}", w, d);
        }
        let mut last = None;
        let mut si = 0;
        for (i, v) in values.iter().enumerate() {
            if si < sent.len() && sent[si].0 == i as u64 * 100 {
                last = Some(sent[si].1);
                si += 1;
            } else {
                let l: f64 = last.expect("first value is reported");
                prop_assert!((v - l).abs() <= d, "{} not reported, last {}", v, l);
            }
        }
    }

    /// A relative deadband: reported when the move exceeds p% of the last reported value.
    #[test]
    fn relative_deadband_is_relative_to_the_last_report(
        steps in prop::collection::vec(-5.0f64..5.0, 1..200),
        p in 0.0f64..20.0,
    ) {
        let values = walk(&steps, 100.0);
        let mut t = tf(json!({"deadband": format!("{p}%")}));
        let sent = run_seq(&mut t, &values, 100);
        for w in sent.windows(2) {
            prop_assert!((w[1].1 - w[0].1).abs() > w[0].1.abs() * p / 100.0);
        }
    }

    /// Heartbeat h at poll interval i: no gap between reports exceeds h + i, even for a value
    /// that never moves, and the first reading is reported.
    #[test]
    fn heartbeat_bounds_the_gap(
        steps in prop::collection::vec(prop_oneof![Just(0.0), -1.0f64..1.0], 1..300),
        d in 0.0f64..5.0,
        h_ms in 1u64..5000,
        i_ms in 1u64..1000,
    ) {
        let values = walk(&steps, 0.0);
        let mut t = tf(json!({"deadband": d, "heartbeat": format!("{h_ms}ms")}));
        let sent = run_seq(&mut t, &values, i_ms);
        prop_assert_eq!(sent[0].0, 0);
        let end = (values.len() as u64 - 1) * i_ms;
        let times: Vec<u64> = sent.iter().map(|s| s.0).chain([end]).collect();
        for w in times.windows(2) {
            prop_assert!(w[1] - w[0] <= h_ms + i_ms, "gap {:?} > {} + {}", w, h_ms, i_ms);
        }
    }

    /// every p at poll interval i: exactly one report per period window that has a poll, and
    /// the reported value is the latest one at that time.
    #[test]
    fn every_sends_one_latest_value_per_period(
        n in 1usize..400,
        p_ms in 1u64..3000,
        i_ms in 1u64..500,
    ) {
        let values: Vec<f64> = (0..n).map(|k| k as f64).collect();
        let mut t = tf(json!({"report": {"every": format!("{p_ms}ms")}}));
        let sent = run_seq(&mut t, &values, i_ms);
        prop_assert_eq!(sent[0], (0, 0.0));
        for (ms, v) in &sent {
            prop_assert_eq!(*v, (*ms / i_ms) as f64, "reported value is the current one");
        }
        for w in sent.windows(2) {
            let gap = w[1].0 - w[0].0;
            prop_assert!(gap >= p_ms.saturating_sub(i_ms).max(1) && gap < p_ms + i_ms,
                "gap {} for period {} interval {}", gap, p_ms, i_ms);
        }
        // Not a single period with a poll is skipped.
        let end = (n as u64 - 1) * i_ms;
        prop_assert!(end - sent.last().unwrap().0 < p_ms + i_ms);
    }

    /// rate of a counter with random increments and intervals: the increment per second,
    /// across wraps of the counter.
    #[test]
    fn rate_is_the_increment_per_second_across_wraps(
        incs in prop::collection::vec((0u64..30000, 1i64..5000), 1..100),
        start in 0u64..65536,
    ) {
        let mut t = tf(json!({"rate": {"wrap": 65536}}));
        let t0 = Instant::now();
        let (mut c, mut ts) = (start, 0i64);
        prop_assert_eq!(t.apply(reading(Value::U64(c), ts), t0), Outcome::Suppressed);
        for (inc, dt) in incs {
            c = (c + inc) % 65536;
            ts += dt;
            let r = emitted(t.apply(reading(Value::U64(c), ts), t0));
            let want = inc as f64 / (dt as f64 / 1000.0);
            let got = r.value.as_f64().unwrap();
            prop_assert!((got - want).abs() <= want.abs() * 1e-12, "{} vs {}", got, want);
        }
    }

    /// scale/offset are exact where the result is representable (integers, binary fractions).
    #[test]
    fn scale_and_offset_are_exact_for_representable_values(
        x in -(1i64 << 20)..(1i64 << 20),
        s in -(1i64 << 12)..(1i64 << 12),
        shift in 0u32..8,
        o in -(1i64 << 20)..(1i64 << 20),
    ) {
        prop_assume!(s != 0);
        let scale = s as f64 / (1u64 << shift) as f64;
        let mut t = tf(json!({"scale": scale, "offset": o}));
        let got = emitted(t.apply(reading(Value::I64(x), 1), Instant::now())).value;
        let want = (x * s) as f64 / (1u64 << shift) as f64 + o as f64;
        prop_assert_eq!(got, f(want));
    }

    /// round(d) leaves a value that already has at most d decimals exactly as it is, and
    /// rounds any value to within half a unit of the last decimal.
    #[test]
    fn round_is_exact_for_values_with_d_decimals(
        k in -1_000_000_000_000i64..1_000_000_000_000,
        d in 0u32..7,
        noise in -0.49f64..0.49,
    ) {
        let p = 10f64.powi(d as i32);
        let y = k as f64 / p;
        let mut t = tf(json!({"round": d}));
        prop_assert_eq!(emitted(t.apply(reading(f(y), 1), Instant::now())).value, f(y));
        prop_assert_eq!(round_to((k as f64 + noise) / p, p), y);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any expression text is either compiled or rejected with an `expr` error, never a panic,
    /// and a compiled one evaluates without panicking.
    #[test]
    fn any_expr_text_is_accepted_or_rejected_cleanly(
        src in "[x0-9.+*/^() ,-]{0,12}|[a-z]{1,6}\\(x\\)|x [+*/-] [a-zπ]{1,3}",
        v in prop_oneof![Just(0.0), Just(-1.0), any::<f64>()],
    ) {
        match Transform::new(&TransformConfig { expr: Some(src.clone()), ..Default::default() }) {
            Ok(mut t) => {
                let _ = t.apply(reading(f(v), 1), Instant::now());
            }
            Err((field, msg)) => {
                prop_assert_eq!(field, "expr");
                prop_assert!(msg.contains(&src), "{}", msg);
            }
        }
    }
}

// ---------------------------------------------------------------- paused time

fn device(transform: serde_json::Value) -> DeviceSpec<(), ()> {
    DeviceSpec {
        name: "d".into(),
        enabled: true,
        interval: Default::default(),
        settings: (),
        channels: vec![ChannelSpec {
            name: "c".into(),
            unit: None,
            transform: Some(Box::new(cfg(transform))),
            settings: (),
        }],
    }
}

/// A device output wired to one sink queue.
fn output(
    transform: serde_json::Value,
) -> (
    DeviceOutput,
    tokio::sync::mpsc::Receiver<Envelope>,
    Arc<ConnectorHealth>,
) {
    let (input, rx) = sink_queue(4096, WhenFull::Block, Arc::default());
    let health = Arc::new(ConnectorHealth::default());
    let out = DeviceOutput::new(
        "x".into(),
        &device(transform),
        ReadingSender::new(vec![input]),
        health.clone(),
    );
    (out, rx, health)
}

fn received(rx: &mut tokio::sync::mpsc::Receiver<Envelope>) -> Vec<Reading> {
    let mut all = Vec::new();
    while let Ok(env) = rx.try_recv() {
        if let Envelope::Batch(b) = env {
            all.extend(b.readings.iter().cloned());
        }
    }
    all
}

/// A poller at 100 ms with `every: 1s` sends one value per second, the latest.
#[tokio::test(start_paused = true)]
async fn every_period_with_a_poller() {
    let (mut out, mut rx, health) = output(json!({"report": {"every": "1s"}}));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for k in 0..100u64 {
        tick.tick().await;
        out.push(0, Value::U64(k), Timestamp(k as i64));
        out.flush().await;
    }
    let got: Vec<Value> = received(&mut rx).into_iter().map(|r| r.value).collect();
    let want: Vec<Value> = (0..10).map(|s| Value::U64(s * 10)).collect();
    assert_eq!(got, want);
    assert_eq!(health.counters.suppressed.load(Relaxed), 90);
}

/// A constant value with on_change + heartbeat 2s, polled at 100 ms for 10 s: sent at 0, 2,
/// 4, 6, 8 s and never in between.
#[tokio::test(start_paused = true)]
async fn heartbeat_with_a_poller() {
    let (mut out, mut rx, _) = output(json!({"report": "on_change", "heartbeat": "2s"}));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for k in 0..100i64 {
        tick.tick().await;
        out.push(0, Value::F64(5.0), Timestamp(k * 100));
        out.flush().await;
    }
    let ts: Vec<i64> = received(&mut rx).iter().map(|r| r.ts.0).collect();
    assert_eq!(ts, vec![0, 2000, 4000, 6000, 8000]);
    assert_eq!(start.elapsed(), Duration::from_millis(9900));
}

/// A listener that got one value: its heartbeat timer repeats that reading (with the time it
/// was read) every period; an `every` listener sends the latest value at the period's end.
#[tokio::test(start_paused = true)]
async fn timers_for_listeners() {
    let (mut out, mut rx, _) = output(json!({"report": "on_change", "heartbeat": "3s"}));
    assert_eq!(
        out.next_timer(),
        None,
        "nothing pending before the first value"
    );
    let start = Instant::now();
    out.push(0, Value::F64(1.5), Timestamp(42));
    out.flush_or_drop();
    for _ in 0..3 {
        let at = out.next_timer().expect("heartbeat timer");
        tokio::time::sleep_until(at).await;
        out.poll_timers(Instant::now());
        out.flush_or_drop();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    let got = received(&mut rx);
    assert_eq!(got.len(), 4);
    assert!(got
        .iter()
        .all(|r| r.ts == Timestamp(42) && r.value == Value::F64(1.5)));

    let (mut out, mut rx, _) = output(json!({"report": {"every": "5s"}}));
    let start = Instant::now();
    for (v, after) in [(1.0, 0), (2.0, 1000), (3.0, 1000)] {
        tokio::time::sleep(Duration::from_millis(after)).await;
        out.push(0, Value::F64(v), Timestamp(v as i64));
        out.flush_or_drop();
    }
    let at = out.next_timer().expect("period timer");
    assert_eq!(at, start + Duration::from_secs(5));
    tokio::time::sleep_until(at).await;
    out.poll_timers(Instant::now());
    out.flush_or_drop();
    let got: Vec<Value> = received(&mut rx).into_iter().map(|r| r.value).collect();
    assert_eq!(got, vec![Value::F64(1.0), Value::F64(3.0)]);
    assert_eq!(
        out.next_timer(),
        None,
        "nothing pending after the period was sent"
    );
}

// ---------------------------------------------------------------- end to end

/// Simulates on_change + deadband `d` on the values of the "always" channel.
fn expected_reports(values: &[f64], d: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for v in values {
        if out.last().is_none_or(|l| (v - l).abs() > d) {
            out.push(*v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadband_cuts_published_messages_end_to_end() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/#").await;
    let sine = json!({"signal": "sine", "min": 0, "max": 1, "period": "20s"});
    let mut banded = sine.clone();
    banded["name"] = json!("banded");
    banded["report"] = json!("on_change");
    banded["deadband"] = json!(0.05);
    let mut always = sine.clone();
    always["name"] = json!("always");
    let mut flat = json!({"name": "flat", "signal": "constant", "value": 7,
        "report": "on_change", "heartbeat": "500ms"});
    flat["unit"] = json!("bar");
    let cfg = sim_config(
        "gwt",
        &broker.url(),
        json!([{"name": "d", "interval": "20ms", "channels": [banded, always, flat]}]),
        json!({}),
    );
    let _gw = InProc::start(&cfg).await;
    const N: usize = 150;
    let ok = sub
        .collect_until(TEST_TIMEOUT, |seen| {
            seen.iter()
                .filter(|m| m.topic == "telemetry/gwt/d/always")
                .count()
                >= N
        })
        .await;
    assert!(ok, "{} messages only", sub.seen.len());
    let of = |ch: &str| -> Vec<(i64, f64)> {
        sub.seen
            .iter()
            .filter(|m| m.topic == format!("telemetry/gwt/d/{ch}"))
            .map(|m| {
                (
                    m.json["ts"].as_i64().unwrap(),
                    m.json["value"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let always = of("always");
    let last_ts = always[N - 1].0;
    let always: Vec<f64> = always[..N].iter().map(|m| m.1).collect();
    // Same signal, same tick: the banded channel sends exactly what the deadband rule selects
    // from the always channel's values (each tick's banded reading precedes its always one).
    let banded: Vec<f64> = of("banded")
        .into_iter()
        .filter(|m| m.0 <= last_ts)
        .map(|m| m.1)
        .collect();
    let want = expected_reports(&always, 0.05);
    assert_eq!(banded, want, "banded values");
    assert!(
        banded.len() * 5 <= always.len() && banded.len() >= 2,
        "banded {} vs always {}",
        banded.len(),
        always.len()
    );
    // The constant is sent only by its heartbeat: gaps of 500 ms plus at most a
    // poll (the upper bound leaves room for a busy machine).
    let flat = of("flat");
    assert!(flat.len() >= 3, "{flat:?}");
    for w in flat.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            (490..2500).contains(&gap),
            "heartbeat gap {gap} ms: {flat:?}"
        );
    }
    assert!(flat.iter().all(|m| m.1 == 7.0));
    eprintln!(
        "end to end: always {} banded {} flat {}",
        always.len(),
        banded.len(),
        flat.len()
    );
}
