//! Frames of two public collections besides libmbus's, decoded as `osgate mbus decode` prints
//! them and compared field by field (quantity, value, unit, function, storage, tariff,
//! sub-unit) with what those projects' own tests expect (tests/data/mbus/pymeterbus and
//! tests/data/mbus/jmbus; sources and licences in their README).

use std::path::Path;

use serde_json::{json, Value as Json};

use crate::mbus::{frame, json as view};

fn decoded(path: &str) -> Json {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/mbus")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let bytes = frame::parse_hex(&text).expect("hex");
    let f = frame::parse(&bytes).expect("a valid frame");
    view::frame(&f).expect("valid user data")
}

/// What a collection's test says of one record: quantity, value, unit (None: none),
/// function, storage, tariff, sub-unit.
type Want = (
    &'static str,
    Json,
    Option<&'static str>,
    &'static str,
    u64,
    u32,
    u32,
);

fn compare(path: &str, got: &Json, want: &[Want]) {
    let recs = got["records"].as_array().expect("records");
    assert_eq!(recs.len(), want.len(), "{path}: record count");
    for (i, (r, w)) in recs.iter().zip(want).enumerate() {
        let (quantity, value, unit, function, storage, tariff, subunit) = w;
        let at = format!("{path} record {i}: {r}");
        assert_eq!(r["quantity"], *quantity, "{at}");
        match (value.as_f64(), r["value"].as_f64()) {
            (Some(w), Some(g)) => assert!((w - g).abs() <= 1e-9 * w.abs().max(1.0), "{at}"),
            _ => assert_eq!(r["value"], *value, "{at}"),
        }
        assert_eq!(r["unit"].as_str(), *unit, "{at}");
        assert_eq!(r["function"], *function, "{at}");
        assert_eq!(r["storage"], *storage, "{at}");
        assert_eq!(r["tariff"], *tariff, "{at}");
        assert_eq!(r["subunit"], *subunit, "{at}");
    }
}

/// pyMeterBus `tests/test_hyd.py`: a HYD heat meter. Values and units are the test's
/// (`WH`, `m^3`, `none`, `m^3/h`, `W`, `C`, `K`); tariffs and sub-units follow the DIFEs.
#[test]
fn pymeterbus_hyd() {
    let got = decoded("pymeterbus/hyd.hex");
    assert_eq!(got["header"]["manufacturer"], "HYD");
    assert_eq!(got["header"]["id"], "51017578");
    let want: [Want; 12] = [
        ("energy", json!(0.0), Some("Wh"), "instantaneous", 0, 0, 0),
        ("energy", json!(0.0), Some("Wh"), "instantaneous", 0, 1, 0),
        (
            "volume",
            json!(1369.443),
            Some("m^3"),
            "instantaneous",
            0,
            0,
            0,
        ),
        ("volume", json!(0.0), Some("m^3"), "instantaneous", 0, 2, 0),
        (
            "volume",
            json!(0.048),
            Some("m^3"),
            "instantaneous",
            0,
            0,
            1,
        ),
        (
            "volume",
            json!(0.012),
            Some("m^3"),
            "instantaneous",
            0,
            0,
            2,
        ),
        ("error flags", json!(16.0), None, "instantaneous", 0, 0, 0),
        // Values during error state with hex digits in their BCD (`DD EB BD`): pyMeterBus
        // weighs each nibble (1445.223), libmbus, and osgate with it, reads the non-decimal
        // high nibbles as 0. The standard gives such digits no value; quantity, unit and
        // function agree.
        (
            "volume flow",
            json!(131.113),
            Some("m^3/h"),
            "error",
            0,
            0,
            0,
        ),
        ("power", json!(13131113.0), Some("W"), "error", 0, 0, 0),
        (
            "flow temperature",
            json!(17.4),
            Some("°C"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "return temperature",
            json!(17.2),
            Some("°C"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "temperature difference",
            json!(0.1),
            Some("K"),
            "instantaneous",
            0,
            0,
            0,
        ),
    ];
    compare("pymeterbus/hyd", &got, &want);
}

/// pyMeterBus `tests/fixtures/frames/control.hex` and `expected/frames/control.json`: a
/// control frame (L = 3) with CI 0x72 is a valid frame with no application data.
#[test]
fn pymeterbus_control_frame() {
    let got = decoded("pymeterbus/control.hex");
    assert_eq!(got["frame"]["address"], 11);
    assert_eq!(got["frame"]["ci"], 0x72);
    assert_eq!(got["frame"]["control"], 8);
    assert_eq!(got["records"], json!([]));
    assert!(got.get("header").is_none(), "{got}");
}

/// pyMeterBus `tests/fixtures/telegrams/variable_data_strings.hex`: an Elvaco gateway with
/// plain-text VIFs and variable-length data, one of them a binary key in the text range.
#[test]
fn pymeterbus_variable_data_strings() {
    let got = decoded("pymeterbus/variable_data_strings.hex");
    let recs = got["records"].as_array().unwrap();
    assert_eq!(recs.len(), 26);
    assert_eq!(recs[0]["value"], 64000392.0);
    assert_eq!(recs[1]["quantity"], "software version");
    assert_eq!(recs[1]["value"], "1.6.3");
    // LVAR 0x10: 16 bytes in the text range that are no text: hex, not mojibake.
    assert_eq!(recs[2]["unit"], "key");
    assert_eq!(
        recs[2]["value"],
        "0C 96 E6 B2 38 3B DE BA D7 58 07 CD 14 ED B3 0A"
    );
    assert_eq!(
        (recs[3]["unit"].as_str(), recs[3]["value"].as_f64()),
        (Some("wmo"), Some(4.0))
    );
    assert_eq!(
        (recs[8]["unit"].as_str(), recs[8]["value"].as_f64()),
        (Some("age"), Some(1440.0))
    );
    assert_eq!(recs[9]["value"], -1.0);
    assert_eq!(recs[20]["value"], 691.0);
    assert_eq!(recs[25]["function"], "more_records_follow");
}

/// jmbus (OpenMUC) `MessagesTest.testMsg3`, an Elster F2 heat meter, whose records
/// `DataRecordParserTest.testDataRecords` checks: description, unit, exponent and value
/// (`ENERGY`, `WATT_HOUR`, 4, 7880 is 78 800 000 Wh; hours are 3600 s).
#[test]
fn jmbus_elster_f2() {
    let got = decoded("jmbus/elster_f2.hex");
    assert_eq!(got["header"]["manufacturer"], "SVM");
    let recs = got["records"].as_array().unwrap();
    let want: [Want; 8] = [
        (
            "energy",
            json!(7880e4),
            Some("Wh"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "volume",
            json!(49150e-1),
            Some("m^3"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "volume",
            json!(49144e-1),
            Some("m^3"),
            "instantaneous",
            0,
            0,
            1,
        ),
        (
            "flow temperature",
            json!(633e-1),
            Some("°C"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "return temperature",
            json!(422e-1),
            Some("°C"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "temperature difference",
            json!(211e-1),
            Some("K"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "on time",
            json!(2360.0 * 3600.0),
            Some("s"),
            "instantaneous",
            0,
            0,
            0,
        ),
        (
            "operating time",
            json!(1853.0 * 3600.0),
            Some("s"),
            "instantaneous",
            0,
            0,
            0,
        ),
    ];
    let first = json!({"records": recs[..8].to_vec()});
    compare("jmbus/elster_f2", &first, &want);
    // The rest of the telegram, which jmbus's test leaves alone: a type-F date and time, two
    // H.C.A. sub-units and the manufacturer block with "more records follow".
    assert_eq!(recs[10]["value"], "2011-01-24T17:43:00Z");
    assert_eq!(recs[13]["function"], "more_records_follow");
}
