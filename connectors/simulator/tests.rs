//! Unit tests of the simulator's signals, settings and writes (`mod.rs`); the
//! end-to-end tests of the connector (devices sharing lines, writes, enable/disable) are in
//! `tests/kit.rs`.

use super::*;

fn ch(signal: Signal) -> SimulatorChannel {
    SimulatorChannel {
        signal,
        min: Some(10.0).into(),
        max: Some(20.0).into(),
        period: Some(10.0).into(),
        value: None,
        step: OptF64::NONE,
        writable: true,
    }
}

#[test]
fn signals_stay_in_range_and_have_their_shape() {
    let run = |signal, times: &[f64]| -> Vec<Value> {
        let s = ch(signal);
        let mut g = DeviceSignals::new(0, [&s]);
        times.iter().map(|&t| g.next(0, &s, t)).collect()
    };
    assert_eq!(
        run(Signal::Sine, &[0.0, 2.5]),
        [Value::F64(15.0), Value::F64(20.0)]
    );
    assert_eq!(run(Signal::Sawtooth, &[5.0]), [Value::F64(15.0)]);
    assert_eq!(
        run(Signal::Square, &[1.0, 6.0]),
        [Value::F64(10.0), Value::F64(20.0)]
    );
    assert_eq!(run(Signal::Bool, &[6.0]), [Value::Bool(true)]);
    let times: Vec<f64> = (0..1000).map(f64::from).collect();
    let walk = run(Signal::RandomWalk, &times);
    assert!(
        walk.windows(2).any(|w| w[0] != w[1]),
        "the walk never moved"
    );
    for v in walk {
        let Value::F64(v) = v else { panic!() };
        assert!((10.0..=20.0).contains(&v));
    }
}

#[test]
fn writes_replace_the_signal_within_its_range() {
    let (sine, saw) = (ch(Signal::Sine), ch(Signal::Sawtooth));
    let mut g = DeviceSignals::new(0, [&sine, &saw]);
    assert_eq!(g.write(1, &saw, Value::F64(12.5)), Ok(Value::F64(12.5)));
    assert_eq!(g.next(1, &saw, 3.0), Value::F64(12.5));
    assert_eq!(g.next(0, &sine, 0.0), Value::F64(15.0), "the other channel");
    assert_eq!(g.write(1, &saw, Value::F64(11.0)), Ok(Value::F64(11.0)));
    assert_eq!(g.next(1, &saw, 3.0), Value::F64(11.0));
    // A constant is a fixed value from the start, which a write replaces.
    let constant = SimulatorChannel {
        value: Some(Box::new(serde_json::json!("idle"))),
        ..ch(Signal::Constant)
    };
    let mut k = DeviceSignals::new(0, [&sine, &constant, &saw]);
    assert_eq!(k.next(1, &constant, 0.0), Value::Text("idle".into()));
    assert_eq!(k.next(2, &saw, 5.0), Value::F64(15.0));
    assert_eq!(k.write(2, &saw, Value::F64(19.0)), Ok(Value::F64(19.0)));
    assert_eq!(k.write(0, &sine, Value::F64(18.0)), Ok(Value::F64(18.0)));
    let now: Vec<Value> = [&sine, &constant, &saw]
        .into_iter()
        .enumerate()
        .map(|(c, s)| k.next(c, s, 5.0))
        .collect();
    assert_eq!(
        now,
        [
            Value::F64(18.0),
            Value::Text("idle".into()),
            Value::F64(19.0)
        ]
    );
    let spec = write_spec(&ChannelSpec {
        name: "c".into(),
        unit: None,
        transform: None,
        settings: ch(Signal::Sine),
    })
    .expect("writable");
    assert!(spec
        .to_raw(&serde_json::json!(25), None)
        .unwrap_err()
        .contains("outside"));
    assert!(spec.to_raw(&serde_json::json!("x"), None).is_err());
    let bool_ = ch(Signal::Bool);
    let mut b = DeviceSignals::new(0, [&bool_]);
    assert_eq!(b.write(0, &bool_, Value::Bool(true)), Ok(Value::Bool(true)));
    assert!(b.write(0, &bool_, Value::U64(1)).is_err());
}

#[test]
fn settings_left_out_are_none_and_periods_are_seconds() {
    let parse = |v| serde_json::from_value::<SimulatorChannel>(v).expect("valid");
    let s = parse(serde_json::json!({"signal": "sine", "min": -2, "period": "1m30s"}));
    assert_eq!(
        (s.min.get(), s.max.get(), s.period.get(), s.step.get()),
        (Some(-2.0), None, Some(90.0), None)
    );
    let s = parse(serde_json::json!({"signal": "ramp", "max": null, "period": "250ms"}));
    assert_eq!((s.max.get(), s.period.get()), (None, Some(0.25)));
    // Equal settings compare equal (a reload keeps the connector), unset ones included.
    assert_eq!(s, s.clone());
    assert_ne!(
        parse(serde_json::json!({"signal": "sine", "min": 0})),
        parse(serde_json::json!({"signal": "sine"}))
    );
    // A hundred thousand channels: the settings fit in 48 bytes.
    assert!(std::mem::size_of::<SimulatorChannel>() <= 48);
}

#[test]
fn counter_counts_and_wraps() {
    let s = SimulatorChannel {
        min: Some(0.0).into(),
        max: Some(2.0).into(),
        ..ch(Signal::Counter)
    };
    let mut c = DeviceSignals::new(0, [&s]);
    let v: Vec<Value> = (0..4).map(|i| c.next(0, &s, i as f64)).collect();
    assert_eq!(
        v,
        vec![Value::U64(0), Value::U64(1), Value::U64(2), Value::U64(0)]
    );
    let s = SimulatorChannel {
        min: OptF64::NONE,
        max: OptF64::NONE,
        ..ch(Signal::Counter)
    };
    let mut c = DeviceSignals::new(0, [&s]);
    assert_eq!(c.next(0, &s, 0.0), Value::U64(0));
    assert_eq!(c.next(0, &s, 0.0), Value::U64(1));
}
