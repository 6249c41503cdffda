//! Tests of the record decoder: every frame of the libmbus corpus (tests/data/mbus/libmbus)
//! against libmbus's normalized XML, the error frames, and a no-panic property.

use super::super::frame;
use super::*;
use proptest::prelude::*;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mbus/libmbus")
}

fn hex_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .expect("corpus folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    v.sort();
    v
}

/// One `<DataRecord>` of libmbus's normalized XML.
#[derive(Debug)]
struct Expected {
    function: Option<String>,
    unit: String,
    value: String,
}

fn tag(block: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = block.find(&open)? + open.len();
    let end = block[start..].find(&format!("</{name}>"))? + start;
    Some(
        block[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

fn expected(xml: &str) -> Vec<Expected> {
    xml.split("<DataRecord id=")
        .skip(1)
        .map(|b| Expected {
            function: tag(b, "Function"),
            unit: tag(b, "Unit").unwrap_or_default(),
            value: tag(b, "Value").unwrap_or_default(),
        })
        .collect()
}

/// Unit conversions for the fixed-structure frames, where libmbus prints kWh and l.
fn base(unit: &str) -> Option<(&'static str, f64)> {
    Some(match unit {
        "Wh" => ("E", 1.0),
        "kWh" => ("E", 1e3),
        "m^3" => ("V", 1.0),
        "l" => ("V", 1e-3),
        _ => return None,
    })
}

fn date_norm(s: &str) -> String {
    s.trim().trim_end_matches('Z').replace(' ', "T")
}

/// Compares one decoded record with libmbus's; `Err` says what differs.
fn compare(r: &Record<'_>, e: &Expected) -> Result<(), String> {
    let Some(function) = &e.function else {
        // libmbus printed an empty record (a VIF it has no entry for): nothing to compare.
        return Ok(());
    };
    let ours_unit = r.unit_text().unwrap_or_default();
    let unit_ok = match e.unit.as_str() {
        "" | "Units for H.C.A." => ours_unit.is_empty(),
        "-" => ours_unit.is_empty() || matches!(r.quantity, Quantity::Text(_)),
        "Reserved" | "reserved but historic" => true,
        u => {
            u == ours_unit
                || matches!((base(u), base(&ours_unit)), (Some(a), Some(b)) if a.0 == b.0)
        }
    };
    if !unit_ok {
        return Err(format!("unit {ours_unit:?}, libmbus {:?}", e.unit));
    }
    let as_hex = function == "Manufacturer specific" || function == "More records follow";
    let want = e.value.trim();
    let numeric = !as_hex
        && !want.is_empty()
        && want
            .trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.');
    if numeric {
        let lv: f64 = want.parse().unwrap();
        let Some(mut v) = r.value.as_f64() else {
            return Err(format!("value {:?}, libmbus {want}", r.value));
        };
        if let (Some((q1, f1)), Some((q2, f2))) = (base(&e.unit), base(&ours_unit)) {
            if q1 == q2 {
                v = v * f2 / f1;
            }
        }
        let tol = 1e-6f64.max(lv.abs() * 1e-9);
        if (v - lv).abs() > tol {
            return Err(format!("value {v}, libmbus {want}"));
        }
        return Ok(());
    }
    let ours = r.value.text().unwrap_or_default();
    let same = match r.value {
        RecordValue::Date(_) => date_norm(&ours) == date_norm(want),
        _ => ours.trim() == want || ours.replace(' ', "") == want.replace(' ', ""),
    };
    if same {
        Ok(())
    } else {
        Err(format!("value {ours:?}, libmbus {want:?}"))
    }
}

fn decode_file(path: &Path) -> Result<(frame::Frame<'static>, Vec<u8>), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let bytes = frame::parse_hex(&text)?;
    let leaked: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
    let f = frame::parse(leaked).map_err(|e| e.to_string())?;
    Ok((f, bytes))
}

#[test]
fn libmbus_corpus_agrees_record_by_record() {
    let (mut ok, mut total, mut frames) = (0usize, 0usize, 0usize);
    let mut fails = Vec::new();
    for path in hex_files("test-frames") {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let xml = std::fs::read_to_string(path.with_extension("norm.xml")).unwrap();
        let want = expected(&xml);
        total += want.len();
        frames += 1;
        let (f, _) = decode_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let frame::Frame::Long { ci, data, .. } = f else {
            panic!("{name}: not a long frame");
        };
        let ud = decode(ci, data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let recs: Vec<Record<'_>> = ud
            .records()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, e) in want.iter().enumerate() {
            match recs.get(i) {
                None => fails.push(format!("{name} record {i}: missing")),
                Some(r) => match compare(r, e) {
                    Ok(()) => ok += 1,
                    Err(why) => fails.push(format!("{name} record {i}: {why}")),
                },
            }
        }
    }
    println!("libmbus corpus: {ok}/{total} records of {frames} frames agree");
    assert_eq!(frames, 76);
    assert_eq!(total, 942);
    assert!(
        fails.is_empty(),
        "{} disagree:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn application_errors_are_named() {
    let want = [
        ("application_busy", "application busy"),
        ("buffer_too_long", "buffer too long"),
        ("error", "unspecified error"),
        ("premature_end_of_record", "premature end of record"),
        ("too_many_difes", "more than 10 DIFEs"),
        ("too_many_readouts", "too many readouts"),
        ("too_many_records", "too many records"),
        ("too_many_vifes", "more than 10 VIFEs"),
        ("unimplemented_ci", "unimplemented CI field"),
        ("unspecified_error", "unspecified error"),
    ];
    for (name, text) in want {
        let path = corpus().join(format!("error-frames/{name}.hex"));
        let (f, _) = decode_file(&path).unwrap();
        let (ci, data) = match f {
            frame::Frame::Long { ci, data, .. } => (ci, data),
            frame::Frame::Control { ci, .. } => (ci, &[][..]),
            other => panic!("{name}: {other:?}"),
        };
        let err = decode(ci, data).unwrap_err();
        assert!(matches!(err, DecodeError::Application(_)), "{name}: {err}");
        assert!(err.to_string().contains(text), "{name}: {err}");
    }
}

#[test]
fn malformed_frames_are_rejected() {
    let mut n = 0;
    for path in hex_files("error-frames") {
        if path.with_extension("xml").exists() {
            continue;
        }
        n += 1;
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let res = decode_file(&path).and_then(|(f, _)| match f {
            frame::Frame::Long { ci, data, .. } => {
                let ud = decode(ci, data).map_err(|e| e.to_string())?;
                ud.records()
                    .collect::<Result<Vec<_>, _>>()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        });
        assert!(res.is_err(), "{name} was accepted");
    }
    assert_eq!(n, 10);
}

#[test]
fn unsupported_frames_do_not_panic() {
    for path in hex_files("unsupported-frames") {
        if let Ok((frame::Frame::Long { ci, data, .. }, _)) = decode_file(&path) {
            if let Ok(ud) = decode(ci, data) {
                for _ in ud.records() {}
            }
        }
    }
}

#[test]
fn derived_names() {
    let data = [
        0x78, 0x56, 0x34, 0x12, 0x24, 0x40, 0x01, 0x07, 0x55, 0x00, 0x00, 0x00, // header
        0x0C, 0x13, 0x21, 0x43, 0x65, 0x87, // volume, 8 BCD, 1e-3 m^3
        0x8C, 0x10, 0x06, 0x01, 0x00, 0x00, 0x00, // energy tariff 1, kWh
        0x1A, 0x5B, 0x99, 0x00, // max flow temperature, °C
        0xC2, 0x40, 0x6C, 0x01, 0x11, // date, storage 1, sub-unit 1
    ];
    let ud = decode(0x72, &data).unwrap();
    assert_eq!(ud.header.id_string().as_deref(), Some("12345678"));
    assert_eq!(ud.header.manufacturer_code().as_deref(), Some("PAD"));
    let names: Vec<String> = ud.records().map(|r| r.unwrap().name()).collect();
    assert_eq!(
        names,
        [
            "volume_m3",
            "energy_wh_t1",
            "flow_temperature_c_max",
            "date_s1_u1"
        ]
    );
    let r: Vec<Record<'_>> = ud.records().map(Result::unwrap).collect();
    assert_eq!(r[0].value, RecordValue::Number(87654.321));
    assert_eq!(r[1].value, RecordValue::Number(1000.0));
    assert_eq!(r[2].value, RecordValue::Number(99.0));
    assert_eq!(r[3].value.text().as_deref(), Some("2008-01-01"));
}

#[test]
fn numbers() {
    assert_eq!(int_le(&[0xFF]), -1);
    assert_eq!(int_le(&[0x00, 0x80]), -32768);
    assert_eq!(int_le(&[0xFF, 0xFF, 0x7F]), 0x7F_FFFF);
    assert_eq!(bcd_le(&[0x21, 0x43]), 4321);
    assert_eq!(bcd_le(&[0x21, 0xF3]), -321);
    assert_eq!(
        manufacturer_id("PAD").map(manufacturer_code).as_deref(),
        Some("PAD")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn decoder_never_panics(ci in prop_oneof![Just(0x72u8), Just(0x76), Just(0x7A), Just(0x78),
                                              Just(0x73), Just(0x70), any::<u8>()],
                            data in proptest::collection::vec(any::<u8>(), 0..260)) {
        if let Ok(ud) = decode(ci, &data) {
            for r in ud.records() {
                match r {
                    Ok(r) => { let _ = (r.name(), r.value.text(), r.unit_text()); }
                    Err(e) => { let _ = e.to_string(); }
                }
            }
        }
    }
}

#[test]
fn comparison_can_fail() {
    let data = [
        0x78, 0x56, 0x34, 0x12, 0x24, 0x40, 0x01, 0x07, 0x55, 0x00, 0x00, 0x00, 0x0C, 0x13, 0x21,
        0x43, 0x65, 0x87,
    ];
    let ud = decode(0x72, &data).unwrap();
    let r = ud.records().next().unwrap().unwrap();
    let e = |unit: &str, value: &str| Expected {
        function: Some("Instantaneous value".into()),
        unit: unit.into(),
        value: value.into(),
    };
    assert!(compare(&r, &e("m^3", "87654.321000")).is_ok());
    assert!(compare(&r, &e("m^3", "87654.322000")).is_err());
    assert!(compare(&r, &e("Wh", "87654.321000")).is_err());
}
