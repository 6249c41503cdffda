//! The value information tables of EN 13757-3:2018: what a record's VIF and VIFEs say it
//! measures, in which unit, at which power of ten.
//!
//! - [`primary`]: the primary VIF table (energy, volume, mass, times, power, flows,
//!   temperatures, pressure, dates, H.C.A., durations, identification).
//! - [`fd`] and [`fb`]: the two extension tables selected by VIF `0xFD` and `0xFB` (first VIFE).
//! - [`Combinable`]: the combinable (orthogonal) VIFEs that follow any of them: "per time"
//!   and "per unit" divisors that change the unit, multiplicative and additive corrections,
//!   limits, errors, accumulation direction, phases (through `0x7C`), future and
//!   manufacturer-specific values; [`Vifes`] holds those of one record.
//!
//! Values are scaled to the base unit of their quantity (`Wh`, `J`, `m^3`, `kg`, `s`, `W`,
//! `°C`, `bar`, `V`, `A`…) with the unit names libmbus prints, so that decoded records compare
//! one to one with the reference implementation. The record walker ([`super::record`]) looks
//! the VIF up here and applies the combinable VIFEs to the value.

use super::record::{Quantity, MAX_EXT};

/// What a VIF (with its extension-table VIFE) means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VifInfo {
    /// The quantity's name (`"energy"`, `"flow temperature"`).
    pub quantity: &'static str,
    /// The base unit the scaled value is in (empty when none).
    pub unit: &'static str,
    /// Factor from the raw value to the base unit.
    pub scale: f64,
}

const fn info(quantity: &'static str, unit: &'static str, scale: f64) -> VifInfo {
    VifInfo {
        quantity,
        unit,
        scale,
    }
}

/// Time units of a 2-bit `nn` field: seconds, minutes, hours, days (in seconds).
pub const DURATION: [f64; 4] = [1.0, 60.0, 3600.0, 86400.0];
/// Time units of a 2-bit `pp` field: hours, days, months, years (in seconds).
const DURATION_LONG: [f64; 4] = [3600.0, 86400.0, MONTH, YEAR];
/// Average month and year in seconds.
pub const MONTH: f64 = 2_629_743.83;
/// Average year in seconds.
pub const YEAR: f64 = 31_556_926.0;

/// 10^e as the nearest double to the decimal constant (`10f64.powi(-3)` is not).
pub fn pow10(e: i32) -> f64 {
    const P: [f64; 25] = [
        1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2,
        1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
    ];
    P.get((e + 12) as usize).copied().unwrap_or(f64::NAN)
}

/// The primary VIF table (`v` without its extension bit). `None` for `0x7B`/`0x7D` (the
/// extension tables, which need their VIFE) and `0x7C` (plain text, handled by the walker).
pub fn primary(v: u8) -> Option<VifInfo> {
    let v = v & 0x7F;
    let n = i32::from(v & 0x07);
    let nn = i32::from(v & 0x03);
    let t = DURATION[usize::from(v & 0x03)];
    Some(match v {
        0x00..=0x07 => info("energy", "Wh", pow10(n - 3)),
        0x08..=0x0F => info("energy", "J", pow10(n)),
        0x10..=0x17 => info("volume", "m^3", pow10(n - 6)),
        0x18..=0x1F => info("mass", "kg", pow10(n - 3)),
        0x20..=0x23 => info("on time", "s", t),
        0x24..=0x27 => info("operating time", "s", t),
        0x28..=0x2F => info("power", "W", pow10(n - 3)),
        0x30..=0x37 => info("power", "J/h", pow10(n)),
        0x38..=0x3F => info("volume flow", "m^3/h", pow10(n - 6)),
        0x40..=0x47 => info("volume flow", "m^3/min", pow10(n - 7)),
        0x48..=0x4F => info("volume flow", "m^3/s", pow10(n - 9)),
        0x50..=0x57 => info("mass flow", "kg/h", pow10(n - 3)),
        0x58..=0x5B => info("flow temperature", "°C", pow10(nn - 3)),
        0x5C..=0x5F => info("return temperature", "°C", pow10(nn - 3)),
        0x60..=0x63 => info("temperature difference", "K", pow10(nn - 3)),
        0x64..=0x67 => info("external temperature", "°C", pow10(nn - 3)),
        0x68..=0x6B => info("pressure", "bar", pow10(nn - 3)),
        0x6C => info("date", "", 1.0),
        0x6D => info("date and time", "", 1.0),
        0x6E => info("hca units", "", 1.0),
        // Reserved: libmbus reports 0 for it, so do we.
        0x6F => info("reserved", "", 0.0),
        0x70..=0x73 => info("averaging duration", "s", t),
        0x74..=0x77 => info("actuality duration", "s", t),
        0x78 => info("fabrication number", "", 1.0),
        0x79 => info("enhanced identification", "", 1.0),
        0x7A => info("bus address", "", 1.0),
        0x7E => info("any", "", 1.0),
        0x7F => info("manufacturer specific", "", 1.0),
        0x7B..=0x7D => return None,
        0x80..=0xFF => unreachable!("masked to 7 bits"),
    })
}

/// The extension table selected by VIF `0xFD` (`e`: the first VIFE, extension bit ignored).
/// Every code has an entry; the reserved ones are named so.
pub fn fd(e: u8) -> VifInfo {
    let e = e & 0x7F;
    let n = i32::from(e & 0x0F);
    let nn = i32::from(e & 0x03);
    let t = DURATION[usize::from(e & 0x03)];
    let tl = DURATION_LONG[usize::from(e & 0x03)];
    let plain = |q| info(q, "", 1.0);
    match e {
        0x00..=0x03 => info("credit", "Currency units", pow10(nn - 3)),
        0x04..=0x07 => info("debit", "Currency units", pow10(nn - 3)),
        0x08 => plain("access number"),
        0x09 => plain("medium"),
        0x0A => plain("manufacturer"),
        0x0B => plain("parameter set identification"),
        0x0C => plain("model version"),
        0x0D => plain("hardware version"),
        0x0E => plain("firmware version"),
        0x0F => plain("software version"),
        0x10 => plain("customer location"),
        0x11 => plain("customer"),
        0x12 => plain("access code user"),
        0x13 => plain("access code operator"),
        0x14 => plain("access code system operator"),
        0x15 => plain("access code developer"),
        0x16 => plain("password"),
        0x17 => plain("error flags"),
        0x18 => plain("error mask"),
        0x19 => plain("security key"),
        0x1A => plain("digital output"),
        0x1B => plain("digital input"),
        0x1C => info("baud rate", "Baud", 1.0),
        0x1D => info("response delay time", "Bittimes", 1.0),
        0x1E => plain("retry"),
        0x1F => plain("remote control"),
        0x20 => plain("first storage number"),
        0x21 => plain("last storage number"),
        0x22 => plain("storage block size"),
        0x23 => plain("tariff and subunit descriptor"),
        0x24..=0x27 => info("storage interval", "s", t),
        0x28 => info("storage interval", "s", MONTH),
        0x29 => info("storage interval", "s", YEAR),
        0x2A => plain("operator specific data"),
        0x2B => info("time point second", "s", 1.0),
        0x2C..=0x2F => info("duration since last readout", "s", t),
        0x30 => plain("start of tariff"),
        0x31..=0x33 => info("duration of tariff", "s", t),
        0x34..=0x37 => info("period of tariff", "s", t),
        0x38 => info("period of tariff", "s", MONTH),
        0x39 => info("period of tariff", "s", YEAR),
        0x3A => plain("dimensionless"),
        0x3B => plain("wireless m-bus data container"),
        0x3C..=0x3F => info("period of nominal data transmissions", "s", t),
        0x40..=0x4F => info("voltage", "V", pow10(n - 9)),
        0x50..=0x5F => info("current", "A", pow10(n - 12)),
        0x60 => plain("reset counter"),
        0x61 => plain("cumulation counter"),
        0x62 => plain("control signal"),
        0x63 => plain("day of week"),
        0x64 => plain("week number"),
        0x65 => plain("time point of day change"),
        0x66 => plain("state of parameter activation"),
        0x67 => plain("special supplier information"),
        0x68..=0x6B => info("duration since last cumulation", "s", tl),
        0x6C..=0x6F => info("operating time battery", "s", tl),
        0x70 => plain("date and time of battery change"),
        0x71 => info("rf level", "dBm", 1.0),
        0x72 => plain("daylight saving"),
        0x73 => plain("listening window management"),
        0x74 => info("remaining battery life time", "s", 86400.0),
        0x75 => plain("number of times the meter was stopped"),
        0x76 => plain("manufacturer specific data container"),
        _ => plain("reserved"),
    }
}

/// The extension table selected by VIF `0xFB` (`e`: the first VIFE, extension bit ignored).
/// Every code has an entry; the reserved ones are named so.
pub fn fb(e: u8) -> VifInfo {
    let e = e & 0x7F;
    let n = i32::from(e & 0x01);
    let nn = i32::from(e & 0x03);
    match e {
        0x00 | 0x01 => info("energy", "Wh", pow10(n + 5)),
        0x02 | 0x03 => info("reactive energy", "VARh", pow10(n + 3)),
        0x04 | 0x05 => info("apparent energy", "VAh", pow10(n + 3)),
        0x08 | 0x09 => info("energy", "J", pow10(n + 8)),
        0x0C..=0x0F => info("energy", "cal", pow10(nn + 5)),
        0x10 | 0x11 => info("volume", "m^3", pow10(n + 2)),
        0x14..=0x17 => info("reactive power", "VAR", pow10(nn)),
        0x18 | 0x19 => info("mass", "kg", pow10(n + 5)),
        0x1A | 0x1B => info("relative humidity", "%", pow10(n - 1)),
        0x20 => info("volume", "feet^3", 1.0),
        0x21 => info("volume", "feet^3", 0.1),
        0x22 => info("volume", "American gallon", 0.1),
        0x23 => info("volume", "American gallon", 1.0),
        0x24 => info("volume flow", "American gallon/min", 1e-3),
        0x25 => info("volume flow", "American gallon/min", 1.0),
        0x26 => info("volume flow", "American gallon/h", 1.0),
        0x28 | 0x29 => info("power", "W", pow10(n + 5)),
        0x2A => info("phase u-u", "°", 0.1),
        0x2B => info("phase u-i", "°", 0.1),
        0x2C..=0x2F => info("frequency", "Hz", pow10(nn - 3)),
        0x30 | 0x31 => info("power", "J/h", pow10(n + 8)),
        0x34..=0x37 => info("apparent power", "VA", pow10(nn)),
        0x58..=0x5B => info("flow temperature", "°F", pow10(nn - 3)),
        0x5C..=0x5F => info("return temperature", "°F", pow10(nn - 3)),
        0x60..=0x63 => info("temperature difference", "°F", pow10(nn - 3)),
        0x64..=0x67 => info("external temperature", "°F", pow10(nn - 3)),
        0x70..=0x73 => info("temperature limit", "°F", pow10(nn - 3)),
        0x74..=0x77 => info("temperature limit", "°C", pow10(nn - 3)),
        0x78..=0x7F => info("cumulative max power", "W", pow10(i32::from(e & 0x07) - 3)),
        _ => info("reserved", "", 1.0),
    }
}

/// One combinable (orthogonal) VIFE, EN 13757-3:2018 table "combinable VIFE" and, after
/// `0x7C`, its extension table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Combinable {
    /// What it says of the value (`"per hour"`, `"upper limit value"`).
    pub meaning: &'static str,
    /// Appended to the VIF's unit when it changes it (`"/h"`, `"/kWh"`, `"*s"`).
    pub unit_suffix: &'static str,
    /// How it changes the value.
    pub effect: Effect,
}

/// What a combinable VIFE does to the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Nothing: it qualifies the value.
    None,
    /// Multiply by this factor.
    Multiply(f64),
    /// Add this constant (in the VIF's unit).
    Add(f64),
}

const fn comb(meaning: &'static str, unit_suffix: &'static str) -> Combinable {
    Combinable {
        meaning,
        unit_suffix,
        effect: Effect::None,
    }
}

/// The combinable VIFE `e` (extension bit ignored); `ext` is the following byte when `e` is
/// `0x7C` (the extension of the combinable table).
pub fn combinable(e: u8, ext: Option<u8>) -> Combinable {
    let e = e & 0x7F;
    match e {
        0x00..=0x11 => comb("reserved", ""),
        0x12 => comb("average", ""),
        0x13 => comb("inverse compact profile", ""),
        0x14 => comb("relative deviation", ""),
        0x15..=0x1C => comb("record error", ""),
        0x1D => comb("standard conformant data content", ""),
        0x1E => comb("compact profile with register", ""),
        0x1F => comb("compact profile", ""),
        0x20 => comb("per second", "/s"),
        0x21 => comb("per minute", "/min"),
        0x22 => comb("per hour", "/h"),
        0x23 => comb("per day", "/d"),
        0x24 => comb("per week", "/week"),
        0x25 => comb("per month", "/month"),
        0x26 => comb("per year", "/year"),
        0x27 => comb("per revolution or measurement", "/revolution"),
        0x28 => comb("increment per input pulse on input channel 0", ""),
        0x29 => comb("increment per input pulse on input channel 1", ""),
        0x2A => comb("increment per output pulse on output channel 0", ""),
        0x2B => comb("increment per output pulse on output channel 1", ""),
        0x2C => comb("per litre", "/l"),
        0x2D => comb("per m^3", "/m^3"),
        0x2E => comb("per kg", "/kg"),
        0x2F => comb("per K", "/K"),
        0x30 => comb("per kWh", "/kWh"),
        0x31 => comb("per GJ", "/GJ"),
        0x32 => comb("per kW", "/kW"),
        0x33 => comb("per K*l", "/(K*l)"),
        0x34 => comb("per V", "/V"),
        0x35 => comb("per A", "/A"),
        0x36 => comb("multiplied by s", "*s"),
        0x37 => comb("multiplied by s/V", "*s/V"),
        0x38 => comb("multiplied by s/A", "*s/A"),
        0x39 => comb("start date and time of", ""),
        0x3A => comb("uncorrected unit or value", ""),
        0x3B => comb("accumulation only if positive contributions", ""),
        0x3C => comb(
            "accumulation of abs value only if negative contributions",
            "",
        ),
        0x3D => comb("alternate non-metric unit system", ""),
        0x3E => comb("value at base conditions", ""),
        0x3F => comb("OBIS declaration", ""),
        0x40 => comb("lower limit value", ""),
        0x48 => comb("upper limit value", ""),
        0x41 => comb("number of exceeds of lower limit", ""),
        0x49 => comb("number of exceeds of upper limit", ""),
        0x42..=0x47 | 0x4A..=0x4F => comb(limit_date(e), ""),
        0x50..=0x5F => comb(limit_duration(e), ""),
        0x60..=0x67 => comb(
            if e & 0x04 == 0 {
                "duration of first"
            } else {
                "duration of last"
            },
            "",
        ),
        0x68 => comb("value during lower limit exceed", ""),
        0x69 => comb("leakage values", ""),
        0x6A => comb("overflow values", ""),
        0x6B => comb("reserved", ""),
        0x6C => comb("value during upper limit exceed", ""),
        0x6D => comb("reserved", ""),
        0x6E => comb("date and time of begin of last", ""),
        0x6F => comb("date and time of end of last", ""),
        0x70..=0x77 => Combinable {
            meaning: "multiplicative correction factor",
            unit_suffix: "",
            effect: Effect::Multiply(pow10(i32::from(e & 0x07) - 6)),
        },
        0x78..=0x7B => Combinable {
            meaning: "additive correction constant",
            unit_suffix: "",
            effect: Effect::Add(pow10(i32::from(e & 0x03) - 3)),
        },
        0x7C => comb(extension(ext.unwrap_or(0)), ""),
        0x7D => Combinable {
            meaning: "multiplicative correction factor",
            unit_suffix: "",
            effect: Effect::Multiply(1000.0),
        },
        0x7E => comb("future value", ""),
        0x7F => comb("manufacturer specific", ""),
        0x80..=0xFF => unreachable!("masked to 7 bits"),
    }
}

/// `E100 u1b0`..: date and time of begin/end of first/last lower/upper limit exceed.
fn limit_date(e: u8) -> &'static str {
    const NAMES: [&str; 8] = [
        "date and time of begin of first lower limit exceed",
        "date and time of end of first lower limit exceed",
        "date and time of begin of last lower limit exceed",
        "date and time of end of last lower limit exceed",
        "date and time of begin of first upper limit exceed",
        "date and time of end of first upper limit exceed",
        "date and time of begin of last upper limit exceed",
        "date and time of end of last upper limit exceed",
    ];
    // u = bit 3 (upper), f = bit 2 (last), b = bit 0 (end); bit 1 is set for dates.
    if e & 0x02 == 0 {
        return "reserved";
    }
    NAMES[usize::from(((e >> 3) & 1) << 2 | ((e >> 2) & 1) << 1 | (e & 1))]
}

/// `E101 ufnn`: duration of first/last lower/upper limit exceed.
fn limit_duration(e: u8) -> &'static str {
    const NAMES: [&str; 4] = [
        "duration of first lower limit exceed",
        "duration of last lower limit exceed",
        "duration of first upper limit exceed",
        "duration of last upper limit exceed",
    ];
    NAMES[usize::from(((e >> 3) & 1) << 1 | ((e >> 2) & 1))]
}

/// The extension of the combinable table (the byte after `0x7C`).
fn extension(x: u8) -> &'static str {
    match x & 0x7F {
        0x01 => "at phase L1",
        0x02 => "at phase L2",
        0x03 => "at phase L3",
        0x04 => "at neutral",
        0x05 => "between phase L1 and L2",
        0x06 => "between phase L2 and L3",
        0x07 => "between phase L3 and L1",
        0x08 => "at quadrant Q1",
        0x09 => "at quadrant Q2",
        0x0A => "at quadrant Q3",
        0x0B => "at quadrant Q4",
        0x0C => "delta between import and export",
        0x10 => "accumulation of absolute value",
        0x11 => "data presented with type C",
        0x12 => "data presented with type D",
        _ => "reserved",
    }
}

/// The combinable VIFEs of a record, as sent (at most [`MAX_EXT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vifes {
    codes: [u8; MAX_EXT],
    len: u8,
}

impl Vifes {
    /// The combinable part of a VIFE chain: after the extension-table VIFE of `0xFD`/`0xFB`,
    /// none after the manufacturer VIF `0xFF`, and up to a manufacturer-specific VIFE `0x7F`
    /// (what follows it is the manufacturer's).
    pub(crate) fn of(vif: u8, chain: &[u8]) -> Vifes {
        let chain = match vif {
            0xFD | 0xFB => chain.get(1..).unwrap_or(&[]),
            0xFF => &[],
            _ => chain,
        };
        let mut v = Vifes::default();
        for &b in chain {
            v.codes[usize::from(v.len)] = b;
            v.len += 1;
            if b & 0x7F == 0x7F {
                break;
            }
        }
        v
    }

    /// Each combinable VIFE with its meaning (a `0x7C` takes the byte after it).
    pub fn iter(&self) -> impl Iterator<Item = Combinable> + '_ {
        let codes = &self.codes[..usize::from(self.len)];
        let mut i = 0;
        std::iter::from_fn(move || {
            let e = *codes.get(i)?;
            i += 1;
            let ext = if e & 0x7F == 0x7C {
                let x = codes.get(i).copied();
                i += 1;
                x
            } else {
                None
            };
            Some(combinable(e, ext))
        })
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The quantity, unit and scale of a VIF (with the extension table's VIFE, or the text of a
/// plain-text VIF).
pub fn vif_info<'a>(vif: u8, vife0: Option<u8>, text: Option<&'a [u8]>) -> (Quantity<'a>, VifInfo) {
    let none = VifInfo {
        quantity: "unknown",
        unit: "",
        scale: 1.0,
    };
    if let Some(t) = text {
        return (Quantity::Text(t), none);
    }
    let unknown = |code| (Quantity::Unknown(code), none);
    let known = |i: VifInfo| (Quantity::Known(i.quantity), i);
    match (vif, vife0) {
        (0xFD, Some(e)) => known(fd(e)),
        (0xFB, Some(e)) => known(fb(e)),
        (0xFD, None) | (0xFB, None) => unknown(u16::from(vif)),
        _ => primary(vif).map_or_else(|| unknown(u16::from(vif & 0x7F)), known),
    }
}

#[cfg(test)]
mod tests;
