//! Unit tests of the simulator's signals, settings and writes (`mod.rs`); the
//! end-to-end tests of the connector (devices sharing lines, writes, enable/disable) are in
//! `tests/kit.rs`.

use super::*;
use serde_json::json;

/// A writable channel of `signal` between 10 and 20, with a period of 10 s.
fn ch(signal: Signal) -> SimulatorChannel {
    let (min, max, period) = (Some(10.0).into(), Some(20.0).into(), Some(10.0).into());
    let (value, step, writable) = (None, OptF64::NONE, true);
    SimulatorChannel { signal, min, max, period, value, step, writable }
}

/// The values of one device's channels `chans` at `t`.
fn at(g: &mut DeviceSignals, chans: &[&SimulatorChannel], t: f64) -> Vec<Value> {
    chans.iter().enumerate().map(|(c, s)| g.next(c, s, t)).collect()
}

#[test]
fn signals_stay_in_range_and_have_their_shape() {
    let run = |signal, times: &[f64]| -> Vec<Value> {
        let s = ch(signal);
        let mut g = DeviceSignals::new(0, [&s]);
        times.iter().map(|&t| g.next(0, &s, t)).collect()
    };
    let (f, b) = (Value::F64, Value::Bool);
    assert_eq!(run(Signal::Sine, &[0.0, 2.5]), [f(15.0), f(20.0)]);
    assert_eq!(run(Signal::Sawtooth, &[5.0]), [f(15.0)]);
    assert_eq!(run(Signal::Square, &[1.0, 6.0]), [f(10.0), f(20.0)]);
    assert_eq!(run(Signal::Bool, &[6.0]), [b(true)]);
    let walk = run(Signal::RandomWalk, &(0..1000).map(f64::from).collect::<Vec<_>>());
    assert!(walk.windows(2).any(|w| w[0] != w[1]), "the walk never moved");
    assert!(walk.iter().all(|v| matches!(v, Value::F64(v) if (10.0..=20.0).contains(v))));
}

#[test]
fn writes_replace_the_signal_within_its_range() {
    let (sine, saw, f) = (ch(Signal::Sine), ch(Signal::Sawtooth), Value::F64);
    let mut g = DeviceSignals::new(0, [&sine, &saw]);
    assert_eq!(g.write(1, &saw, f(12.5)), Ok(f(12.5)));
    assert_eq!(g.next(1, &saw, 3.0), f(12.5));
    assert_eq!(g.next(0, &sine, 0.0), f(15.0), "the other channel");
    assert_eq!(g.write(1, &saw, f(11.0)), Ok(f(11.0)));
    assert_eq!(g.next(1, &saw, 3.0), f(11.0));
    // A constant is a fixed value from the start, which a write replaces.
    let value = Some(Box::new(json!("idle")));
    let constant = SimulatorChannel { value, ..ch(Signal::Constant) };
    let all = [&sine, &constant, &saw];
    let mut k = DeviceSignals::new(0, all);
    let idle = Value::Text("idle".into());
    assert_eq!(at(&mut k, &all, 5.0), [f(15.0), idle.clone(), f(15.0)]);
    assert_eq!(k.write(2, &saw, f(19.0)), Ok(f(19.0)));
    assert_eq!(k.write(0, &sine, f(18.0)), Ok(f(18.0)));
    assert_eq!(at(&mut k, &all, 5.0), [f(18.0), idle, f(19.0)]);
    let (name, settings) = ("c".into(), ch(Signal::Sine));
    let c = ChannelSpec { name, unit: None, transform: None, settings };
    let spec = write_spec(&c).expect("writable");
    assert!(spec.to_raw(&json!(25), None).unwrap_err().contains("outside"));
    assert!(spec.to_raw(&json!("x"), None).is_err());
    let bool_ = ch(Signal::Bool);
    let mut b = DeviceSignals::new(0, [&bool_]);
    assert_eq!(b.write(0, &bool_, Value::Bool(true)), Ok(Value::Bool(true)));
    assert!(b.write(0, &bool_, Value::U64(1)).is_err());
}

#[test]
fn settings_left_out_are_none_and_periods_are_seconds() {
    let parse = |v| serde_json::from_value::<SimulatorChannel>(v).expect("valid");
    let s = parse(json!({"signal": "sine", "min": -2, "period": "1m30s"}));
    let got = (s.min.get(), s.max.get(), s.period.get(), s.step.get());
    assert_eq!(got, (Some(-2.0), None, Some(90.0), None));
    let s = parse(json!({"signal": "ramp", "max": null, "period": "250ms"}));
    assert_eq!((s.max.get(), s.period.get()), (None, Some(0.25)));
    // Equal settings compare equal (a reload keeps the connector), unset ones included.
    assert_eq!(s, s.clone());
    let sine = json!({"signal": "sine"});
    assert_ne!(parse(json!({"signal": "sine", "min": 0})), parse(sine));
    // A hundred thousand channels: the settings fit in 48 bytes.
    assert!(std::mem::size_of::<SimulatorChannel>() <= 48);
}

#[test]
fn counter_counts_and_wraps() {
    let (min, max) = (Some(0.0).into(), Some(2.0).into());
    let s = SimulatorChannel { min, max, ..ch(Signal::Counter) };
    let mut c = DeviceSignals::new(0, [&s]);
    let v: Vec<Value> = (0..4).map(|i| c.next(0, &s, i as f64)).collect();
    assert_eq!(v, [0, 1, 2, 0].map(Value::U64));
    let (min, max) = (OptF64::NONE, OptF64::NONE);
    let s = SimulatorChannel { min, max, ..ch(Signal::Counter) };
    let mut c = DeviceSignals::new(0, [&s]);
    assert_eq!([c.next(0, &s, 0.0), c.next(0, &s, 0.0)], [0, 1].map(Value::U64));
}

#[test]
fn mistakes_name_the_field() {
    let chans = json!([{"name": "a", "signal": "sine", "min": 5, "max": 5, "period": "0s"},
        {"name": "b", "signal": "constant"}, {"name": "c", "signal": "sine", "value": 1},
        {"name": "d", "signal": "counter", "min": -1}, {"name": "e", "signal": "sine"}]);
    let v = json!({"name": "s", "protocol": "simulator", "devices": [{"name": "d", "channels": chans}]});
    let errs = osgate_core::config::spec::parse_checked(v, "c", validate).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    let want = ["0].max", "0].period", "1].value", "2].value", "3].min"];
    assert_eq!(paths, want.map(|w| format!("c.devices[0].channels[{w}")), "{errs:?}");
}
