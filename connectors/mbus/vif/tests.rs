//! The VIF tables checked entry by entry against EN 13757-3:2018 as transcribed here: every
//! code of the primary table and of the `0xFD` and `0xFB` extension tables has exactly one row
//! (a range of codes with its quantity, unit and the exponent of each code), and every
//! combinable VIFE its meaning, unit change and effect. A decode of whole records shows the
//! tables at work, combinable VIFEs included.

use super::*;
use crate::mbus::record::{decode, Quantity, RecordValue};

type Scale = Box<dyn Fn(u8) -> f64>;

/// One row of a table: codes `from..=to`, the quantity, the unit, and the factor of a code.
struct Row {
    from: u8,
    to: u8,
    quantity: &'static str,
    unit: &'static str,
    scale: Scale,
}

fn row(
    from: u8,
    to: u8,
    quantity: &'static str,
    unit: &'static str,
    scale: impl Fn(u8) -> f64 + 'static,
) -> Row {
    Row {
        from,
        to,
        quantity,
        unit,
        scale: Box::new(scale),
    }
}

/// 10^(code & mask + k): the exponent in the code's low bits.
fn pw(mask: u8, k: i32) -> impl Fn(u8) -> f64 {
    move |c| 10f64.powi(i32::from(c & mask) + k)
}

fn one(_: u8) -> f64 {
    1.0
}
fn zero(_: u8) -> f64 {
    0.0
}
fn nn_seconds(c: u8) -> f64 {
    [1.0, 60.0, 3600.0, 86400.0][usize::from(c & 3)]
}
fn pp_seconds(c: u8) -> f64 {
    [3600.0, 86400.0, MONTH, YEAR][usize::from(c & 3)]
}

/// Checks that `rows` cover every code 0x00–0x7F but `gaps` once, and that `lookup` agrees.
fn check(table: &str, rows: &[Row], gaps: &[u8], lookup: impl Fn(u8) -> Option<VifInfo>) {
    let mut seen = [0u8; 128];
    for r in rows {
        for code in r.from..=r.to {
            seen[usize::from(code)] += 1;
            let got = lookup(code).unwrap_or_else(|| panic!("{table} {code:02X}: no entry"));
            assert_eq!(got.quantity, r.quantity, "{table} {code:02X}");
            assert_eq!(got.unit, r.unit, "{table} {code:02X}");
            let want = (r.scale)(code);
            assert!(
                (got.scale - want).abs() <= want.abs() * 1e-12,
                "{table} {code:02X}: scale {} want {want}",
                got.scale
            );
        }
    }
    for (code, n) in seen.iter().enumerate() {
        let gap = gaps.contains(&(code as u8));
        assert_eq!(*n, u8::from(!gap), "{table} {code:02X} rows");
        if gap {
            assert!(lookup(code as u8).is_none(), "{table} {code:02X}");
        }
    }
}

#[test]
fn primary_table() {
    let rows = [
        row(0x00, 0x07, "energy", "Wh", pw(7, -3)),
        row(0x08, 0x0F, "energy", "J", pw(7, 0)),
        row(0x10, 0x17, "volume", "m^3", pw(7, -6)),
        row(0x18, 0x1F, "mass", "kg", pw(7, -3)),
        row(0x20, 0x23, "on time", "s", nn_seconds),
        row(0x24, 0x27, "operating time", "s", nn_seconds),
        row(0x28, 0x2F, "power", "W", pw(7, -3)),
        row(0x30, 0x37, "power", "J/h", pw(7, 0)),
        row(0x38, 0x3F, "volume flow", "m^3/h", pw(7, -6)),
        row(0x40, 0x47, "volume flow", "m^3/min", pw(7, -7)),
        row(0x48, 0x4F, "volume flow", "m^3/s", pw(7, -9)),
        row(0x50, 0x57, "mass flow", "kg/h", pw(7, -3)),
        row(0x58, 0x5B, "flow temperature", "°C", pw(3, -3)),
        row(0x5C, 0x5F, "return temperature", "°C", pw(3, -3)),
        row(0x60, 0x63, "temperature difference", "K", pw(3, -3)),
        row(0x64, 0x67, "external temperature", "°C", pw(3, -3)),
        row(0x68, 0x6B, "pressure", "bar", pw(3, -3)),
        row(0x6C, 0x6C, "date", "", one),
        row(0x6D, 0x6D, "date and time", "", one),
        row(0x6E, 0x6E, "hca units", "", one),
        row(0x6F, 0x6F, "reserved", "", zero),
        row(0x70, 0x73, "averaging duration", "s", nn_seconds),
        row(0x74, 0x77, "actuality duration", "s", nn_seconds),
        row(0x78, 0x78, "fabrication number", "", one),
        row(0x79, 0x79, "enhanced identification", "", one),
        row(0x7A, 0x7A, "bus address", "", one),
        row(0x7E, 0x7E, "any", "", one),
        row(0x7F, 0x7F, "manufacturer specific", "", one),
    ];
    // 0x7B and 0x7D select the extension tables, 0x7C is plain text.
    check("primary", &rows, &[0x7B, 0x7C, 0x7D], primary);
    // The extension bit does not change the meaning.
    assert_eq!(primary(0x93), primary(0x13));
}

#[test]
fn fd_extension_table() {
    let v = |c: u8| 10f64.powi(i32::from(c & 0x0F) - 9);
    let a = |c: u8| 10f64.powi(i32::from(c & 0x0F) - 12);
    let money = |c: u8| 10f64.powi(i32::from(c & 3) - 3);
    let plain = |c: u8, q: &'static str| row(c, c, q, "", one);
    let rows = [
        row(0x00, 0x03, "credit", "Currency units", money),
        row(0x04, 0x07, "debit", "Currency units", money),
        plain(0x08, "access number"),
        plain(0x09, "medium"),
        plain(0x0A, "manufacturer"),
        plain(0x0B, "parameter set identification"),
        plain(0x0C, "model version"),
        plain(0x0D, "hardware version"),
        plain(0x0E, "firmware version"),
        plain(0x0F, "software version"),
        plain(0x10, "customer location"),
        plain(0x11, "customer"),
        plain(0x12, "access code user"),
        plain(0x13, "access code operator"),
        plain(0x14, "access code system operator"),
        plain(0x15, "access code developer"),
        plain(0x16, "password"),
        plain(0x17, "error flags"),
        plain(0x18, "error mask"),
        plain(0x19, "security key"),
        plain(0x1A, "digital output"),
        plain(0x1B, "digital input"),
        row(0x1C, 0x1C, "baud rate", "Baud", one),
        row(0x1D, 0x1D, "response delay time", "Bittimes", one),
        plain(0x1E, "retry"),
        plain(0x1F, "remote control"),
        plain(0x20, "first storage number"),
        plain(0x21, "last storage number"),
        plain(0x22, "storage block size"),
        plain(0x23, "tariff and subunit descriptor"),
        row(0x24, 0x27, "storage interval", "s", nn_seconds),
        row(0x28, 0x28, "storage interval", "s", |_| MONTH),
        row(0x29, 0x29, "storage interval", "s", |_| YEAR),
        plain(0x2A, "operator specific data"),
        row(0x2B, 0x2B, "time point second", "s", one),
        row(0x2C, 0x2F, "duration since last readout", "s", nn_seconds),
        plain(0x30, "start of tariff"),
        row(0x31, 0x33, "duration of tariff", "s", nn_seconds),
        row(0x34, 0x37, "period of tariff", "s", nn_seconds),
        row(0x38, 0x38, "period of tariff", "s", |_| MONTH),
        row(0x39, 0x39, "period of tariff", "s", |_| YEAR),
        plain(0x3A, "dimensionless"),
        plain(0x3B, "wireless m-bus data container"),
        row(
            0x3C,
            0x3F,
            "period of nominal data transmissions",
            "s",
            nn_seconds,
        ),
        row(0x40, 0x4F, "voltage", "V", v),
        row(0x50, 0x5F, "current", "A", a),
        plain(0x60, "reset counter"),
        plain(0x61, "cumulation counter"),
        plain(0x62, "control signal"),
        plain(0x63, "day of week"),
        plain(0x64, "week number"),
        plain(0x65, "time point of day change"),
        plain(0x66, "state of parameter activation"),
        plain(0x67, "special supplier information"),
        row(
            0x68,
            0x6B,
            "duration since last cumulation",
            "s",
            pp_seconds,
        ),
        row(0x6C, 0x6F, "operating time battery", "s", pp_seconds),
        plain(0x70, "date and time of battery change"),
        row(0x71, 0x71, "rf level", "dBm", one),
        plain(0x72, "daylight saving"),
        plain(0x73, "listening window management"),
        row(0x74, 0x74, "remaining battery life time", "s", |_| 86400.0),
        plain(0x75, "number of times the meter was stopped"),
        plain(0x76, "manufacturer specific data container"),
        row(0x77, 0x7F, "reserved", "", one),
    ];
    check("FD", &rows, &[], |c| Some(fd(c)));
    assert_eq!(fd(0xC8), fd(0x48));
}

#[test]
fn fb_extension_table() {
    let rows = [
        row(0x00, 0x01, "energy", "Wh", pw(1, 5)),
        row(0x02, 0x03, "reactive energy", "VARh", pw(1, 3)),
        row(0x04, 0x05, "apparent energy", "VAh", pw(1, 3)),
        row(0x06, 0x07, "reserved", "", one),
        row(0x08, 0x09, "energy", "J", pw(1, 8)),
        row(0x0A, 0x0B, "reserved", "", one),
        row(0x0C, 0x0F, "energy", "cal", pw(3, 5)),
        row(0x10, 0x11, "volume", "m^3", pw(1, 2)),
        row(0x12, 0x13, "reserved", "", one),
        row(0x14, 0x17, "reactive power", "VAR", pw(3, 0)),
        row(0x18, 0x19, "mass", "kg", pw(1, 5)),
        row(0x1A, 0x1B, "relative humidity", "%", pw(1, -1)),
        row(0x1C, 0x1F, "reserved", "", one),
        row(0x20, 0x20, "volume", "feet^3", one),
        row(0x21, 0x21, "volume", "feet^3", |_| 0.1),
        row(0x22, 0x22, "volume", "American gallon", |_| 0.1),
        row(0x23, 0x23, "volume", "American gallon", one),
        row(0x24, 0x24, "volume flow", "American gallon/min", |_| 1e-3),
        row(0x25, 0x25, "volume flow", "American gallon/min", one),
        row(0x26, 0x26, "volume flow", "American gallon/h", one),
        row(0x27, 0x27, "reserved", "", one),
        row(0x28, 0x29, "power", "W", pw(1, 5)),
        row(0x2A, 0x2A, "phase u-u", "°", |_| 0.1),
        row(0x2B, 0x2B, "phase u-i", "°", |_| 0.1),
        row(0x2C, 0x2F, "frequency", "Hz", pw(3, -3)),
        row(0x30, 0x31, "power", "J/h", pw(1, 8)),
        row(0x32, 0x33, "reserved", "", one),
        row(0x34, 0x37, "apparent power", "VA", pw(3, 0)),
        row(0x38, 0x57, "reserved", "", one),
        row(0x58, 0x5B, "flow temperature", "°F", pw(3, -3)),
        row(0x5C, 0x5F, "return temperature", "°F", pw(3, -3)),
        row(0x60, 0x63, "temperature difference", "°F", pw(3, -3)),
        row(0x64, 0x67, "external temperature", "°F", pw(3, -3)),
        row(0x68, 0x6F, "reserved", "", one),
        row(0x70, 0x73, "temperature limit", "°F", pw(3, -3)),
        row(0x74, 0x77, "temperature limit", "°C", pw(3, -3)),
        row(0x78, 0x7F, "cumulative max power", "W", pw(7, -3)),
    ];
    check("FB", &rows, &[], |c| Some(fb(c)));
}

#[test]
fn combinable_vifes() {
    let meaning = |e: u8| combinable(e, None).meaning;
    let suffix = |e: u8| combinable(e, None).unit_suffix;
    for e in 0x00..=0x11 {
        assert_eq!(meaning(e), "reserved");
    }
    assert_eq!(meaning(0x12), "average");
    assert_eq!(meaning(0x13), "inverse compact profile");
    assert_eq!(meaning(0x14), "relative deviation");
    for e in 0x15..=0x1C {
        assert_eq!(meaning(e), "record error");
    }
    assert_eq!(meaning(0x1D), "standard conformant data content");
    assert_eq!(meaning(0x1E), "compact profile with register");
    assert_eq!(meaning(0x1F), "compact profile");
    let per = [
        (0x20, "per second", "/s"),
        (0x21, "per minute", "/min"),
        (0x22, "per hour", "/h"),
        (0x23, "per day", "/d"),
        (0x24, "per week", "/week"),
        (0x25, "per month", "/month"),
        (0x26, "per year", "/year"),
        (0x27, "per revolution or measurement", "/revolution"),
        (0x2C, "per litre", "/l"),
        (0x2D, "per m^3", "/m^3"),
        (0x2E, "per kg", "/kg"),
        (0x2F, "per K", "/K"),
        (0x30, "per kWh", "/kWh"),
        (0x31, "per GJ", "/GJ"),
        (0x32, "per kW", "/kW"),
        (0x33, "per K*l", "/(K*l)"),
        (0x34, "per V", "/V"),
        (0x35, "per A", "/A"),
        (0x36, "multiplied by s", "*s"),
        (0x37, "multiplied by s/V", "*s/V"),
        (0x38, "multiplied by s/A", "*s/A"),
    ];
    for (e, m, s) in per {
        assert_eq!((meaning(e), suffix(e)), (m, s), "{e:02X}");
        assert_eq!(combinable(e, None).effect, Effect::None);
    }
    for (e, m) in [
        (0x28, "increment per input pulse on input channel 0"),
        (0x29, "increment per input pulse on input channel 1"),
        (0x2A, "increment per output pulse on output channel 0"),
        (0x2B, "increment per output pulse on output channel 1"),
        (0x39, "start date and time of"),
        (0x3A, "uncorrected unit or value"),
        (0x3B, "accumulation only if positive contributions"),
        (
            0x3C,
            "accumulation of abs value only if negative contributions",
        ),
        (0x3D, "alternate non-metric unit system"),
        (0x3E, "value at base conditions"),
        (0x3F, "OBIS declaration"),
        (0x40, "lower limit value"),
        (0x41, "number of exceeds of lower limit"),
        (0x42, "date and time of begin of first lower limit exceed"),
        (0x43, "date and time of end of first lower limit exceed"),
        (0x44, "reserved"),
        (0x45, "reserved"),
        (0x46, "date and time of begin of last lower limit exceed"),
        (0x47, "date and time of end of last lower limit exceed"),
        (0x48, "upper limit value"),
        (0x49, "number of exceeds of upper limit"),
        (0x4A, "date and time of begin of first upper limit exceed"),
        (0x4B, "date and time of end of first upper limit exceed"),
        (0x4C, "reserved"),
        (0x4D, "reserved"),
        (0x4E, "date and time of begin of last upper limit exceed"),
        (0x4F, "date and time of end of last upper limit exceed"),
        (0x50, "duration of first lower limit exceed"),
        (0x54, "duration of last lower limit exceed"),
        (0x58, "duration of first upper limit exceed"),
        (0x5F, "duration of last upper limit exceed"),
        (0x60, "duration of first"),
        (0x64, "duration of last"),
        (0x68, "value during lower limit exceed"),
        (0x69, "leakage values"),
        (0x6A, "overflow values"),
        (0x6C, "value during upper limit exceed"),
        (0x6E, "date and time of begin of last"),
        (0x6F, "date and time of end of last"),
        (0x7E, "future value"),
        (0x7F, "manufacturer specific"),
    ] {
        assert_eq!((meaning(e), suffix(e)), (m, ""), "{e:02X}");
    }
    for e in 0x70..=0x77u8 {
        assert_eq!(
            combinable(e, None).effect,
            Effect::Multiply(pow10(i32::from(e & 7) - 6))
        );
    }
    for e in 0x78..=0x7Bu8 {
        assert_eq!(
            combinable(e, None).effect,
            Effect::Add(pow10(i32::from(e & 3) - 3))
        );
    }
    assert_eq!(combinable(0x7D, None).effect, Effect::Multiply(1000.0));
    // The extension of the combinable table, through 0x7C.
    for (x, m) in [
        (0x01, "at phase L1"),
        (0x02, "at phase L2"),
        (0x03, "at phase L3"),
        (0x04, "at neutral"),
        (0x05, "between phase L1 and L2"),
        (0x06, "between phase L2 and L3"),
        (0x07, "between phase L3 and L1"),
        (0x08, "at quadrant Q1"),
        (0x09, "at quadrant Q2"),
        (0x0A, "at quadrant Q3"),
        (0x0B, "at quadrant Q4"),
        (0x0C, "delta between import and export"),
        (0x10, "accumulation of absolute value"),
        (0x11, "data presented with type C"),
        (0x12, "data presented with type D"),
        (0x00, "reserved"),
    ] {
        assert_eq!(combinable(0xFC, Some(x)).meaning, m, "7C {x:02X}");
    }
}

/// One record of a telegram without header (CI 0x78).
fn one_record(bytes: &[u8]) -> (String, Option<String>, RecordValue<'_>, Vec<&'static str>) {
    let ud = decode(0x78, bytes).unwrap();
    let r = ud.records().next().unwrap().unwrap();
    (
        r.quantity_name().to_string(),
        r.unit_text(),
        r.value,
        r.modifiers(),
    )
}

#[test]
fn records_use_the_tables() {
    // Primary: 16-bit integer, VIF 0x13 volume 1e-3 m^3.
    let (q, u, v, _) = one_record(&[0x02, 0x13, 0x39, 0x30]);
    assert_eq!((q.as_str(), u.as_deref()), ("volume", Some("m^3")));
    assert_eq!(v, RecordValue::Number(12.345));
    // FD 0x48: voltage 10^-1 V.
    let (q, u, v, _) = one_record(&[0x02, 0xFD, 0x48, 0xE6, 0x08]);
    assert_eq!((q.as_str(), u.as_deref()), ("voltage", Some("V")));
    assert_eq!(v, RecordValue::Number(227.8));
    // FB 0x1A: relative humidity 10^-1 %.
    let (q, u, v, _) = one_record(&[0x02, 0xFB, 0x1A, 0xC8, 0x01]);
    assert_eq!((q.as_str(), u.as_deref()), ("relative humidity", Some("%")));
    assert_eq!(v, RecordValue::Number(45.6));
    // FB 0x2E: frequency 10^-1 Hz.
    let (q, u, v, _) = one_record(&[0x02, 0xFB, 0x2E, 0xF4, 0x01]);
    assert_eq!((q.as_str(), u.as_deref()), ("frequency", Some("Hz")));
    assert_eq!(v, RecordValue::Number(50.0));
    // FD 0x74: remaining battery life in days, in seconds.
    let (q, _, v, _) = one_record(&[0x02, 0xFD, 0x74, 0x6D, 0x01]);
    assert_eq!(q, "remaining battery life time");
    assert_eq!(v, RecordValue::Number(365.0 * 86400.0));
}

#[test]
fn combinable_vifes_change_unit_and_value() {
    // Energy Wh (VIF 0x03) per hour: the unit says so.
    let (q, u, v, m) = one_record(&[0x02, 0x83, 0x22, 0x10, 0x00]);
    assert_eq!((q.as_str(), u.as_deref()), ("energy", Some("Wh/h")));
    assert_eq!(v, RecordValue::Number(16.0));
    assert_eq!(m, ["per hour"]);
    // Volume flow (VIF 0x3B) as the upper limit value, with a correction factor 10^-2.
    let (_, u, v, m) = one_record(&[0x02, 0xBB, 0xC8, 0x74, 0x10, 0x27]);
    assert_eq!(u.as_deref(), Some("m^3/h"));
    assert_eq!(v, RecordValue::Number(0.1));
    assert_eq!(m, ["upper limit value", "multiplicative correction factor"]);
    // After an extension table: voltage (FD 0x48) at phase L2 (7C 02).
    let (q, u, v, m) = one_record(&[0x02, 0xFD, 0xC8, 0xFC, 0x02, 0xE6, 0x08]);
    assert_eq!((q.as_str(), u.as_deref()), ("voltage", Some("V")));
    assert_eq!(v, RecordValue::Number(227.8));
    assert_eq!(m, ["at phase L2"]);
    // After a manufacturer-specific VIFE, the rest is the manufacturer's.
    let (_, u, _, m) = one_record(&[0x01, 0x83, 0xFF, 0x22, 0x05]);
    assert_eq!(u.as_deref(), Some("Wh"));
    assert_eq!(m, ["manufacturer specific"]);
    // The manufacturer VIF 0xFF: none of its VIFEs are combinable.
    let ud = decode(0x78, &[0x01, 0xFF, 0x22, 0x05]).unwrap();
    let r = ud.records().next().unwrap().unwrap();
    assert!(r.modifiers().is_empty());
    assert!(matches!(
        r.quantity,
        Quantity::Known("manufacturer specific")
    ));
}

#[test]
fn dates_and_times() {
    // Type J: a time of day (VIF 0x6D, 24 bits).
    let (q, _, v, _) = one_record(&[0x03, 0x6D, 0x1E, 0x2D, 0x0D]);
    assert_eq!(q, "date and time");
    assert_eq!(v.text().as_deref(), Some("13:45:30"));
    // Type G and F still as before.
    let (_, _, v, _) = one_record(&[0x02, 0x6C, 0x01, 0x11]);
    assert_eq!(v.text().as_deref(), Some("2008-01-01"));
}

#[test]
fn variable_length_records() {
    // Text, printable: "1.6.3" (software version, FD 0x0F).
    let (q, _, v, _) = one_record(&[0x0D, 0xFD, 0x0F, 0x05, b'3', b'.', b'6', b'.', b'1']);
    assert_eq!(q, "software version");
    assert_eq!(v.text().as_deref(), Some("1.6.3"));
    // Text range but binary bytes: hex.
    let (_, _, v, _) = one_record(&[0x0D, 0xFD, 0x19, 0x03, 0x01, 0xFF, 0x80]);
    assert_eq!(v.text().as_deref(), Some("80 FF 01"));
    // Positive BCD of 4 digits, scaled by the VIF (volume 1e-3 m^3).
    let (_, _, v, _) = one_record(&[0x0D, 0x13, 0xC2, 0x34, 0x12]);
    assert_eq!(v, RecordValue::Number(1.234));
    // Negative BCD.
    let (_, _, v, _) = one_record(&[0x0D, 0x13, 0xD2, 0x34, 0x12]);
    assert_eq!(v, RecordValue::Number(-1.234));
    // Binary number of 3 bytes.
    let (_, _, v, _) = one_record(&[0x0D, 0x13, 0xE3, 0x40, 0xE2, 0x01]);
    assert_eq!(v, RecordValue::Number(123.456));
    // A reserved LVAR is an error.
    assert!(decode(0x78, &[0x0D, 0x13, 0xF7])
        .unwrap()
        .records()
        .next()
        .unwrap()
        .is_err());
}
