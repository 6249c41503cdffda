//! JSON views of M-Bus frames and records, as `osgate mbus decode|read|scan` print them and
//! the `mbus.scan` RPC answers.

use serde_json::{json, Map, Value as Json};

use super::frame::Frame;
use super::record::{self, DecodeError, Header, Record, RecordValue};

/// The header as JSON (`id`, `manufacturer`, `version`, `medium`, `access_number`, `status`).
pub fn header(h: &Header) -> Json {
    let mut m = Map::new();
    if let Some(id) = h.id_string() {
        m.insert("id".into(), id.into());
    }
    if let Some(man) = h.manufacturer_code() {
        m.insert("manufacturer".into(), man.into());
    }
    if let Some(v) = h.version {
        m.insert("version".into(), v.into());
    }
    if let Some(med) = h.medium_name() {
        m.insert("medium".into(), med.into());
    }
    m.insert("access_number".into(), h.access_number.into());
    m.insert("status".into(), h.status.into());
    if h.signature != 0 {
        m.insert("signature".into(), h.signature.into());
    }
    Json::Object(m)
}

/// A record's value as JSON: a number, an ISO date, text, hex bytes, or null.
pub fn value(v: &RecordValue<'_>) -> Json {
    match v {
        RecordValue::None => Json::Null,
        RecordValue::Number(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        other => other.text().map_or(Json::Null, Json::String),
    }
}

/// One record as JSON (`modifiers` only when combinable VIFEs qualify the value).
pub fn record(r: &Record<'_>, name: String) -> Json {
    let mut j = json!({
        "index": r.index,
        "quantity": r.quantity_name(),
        "value": value(&r.value),
        "unit": r.unit_text(),
        "storage": r.storage,
        "tariff": r.tariff,
        "subunit": r.subunit,
        "function": r.function.as_str(),
        "name": name,
    });
    if !r.vife.is_empty() {
        j["modifiers"] = r.modifiers().into();
    }
    j
}

/// The records of one telegram with unique names (a repeated derived name gets `_2`, `_3`…
/// in telegram order).
pub fn unique_names<'a>(recs: &[Record<'a>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(recs.len());
    for r in recs {
        let base = r.name();
        let mut name = base.clone();
        let mut k = 1;
        while names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        names.push(name);
    }
    names
}

/// A whole frame as JSON: every frame type (ACK, short, control, long). `Err` only when the
/// user data of an RSP_UD is malformed; application errors are shown as `"error"`, a CI this
/// decoder does not read as the `"data"` bytes with a `"note"`.
pub fn frame(f: &Frame<'_>) -> Result<Json, DecodeError> {
    let mut out = Map::new();
    let mut desc = Map::new();
    desc.insert("type".into(), f.kind().into());
    match *f {
        Frame::Ack => {}
        Frame::Short { control, address } => {
            desc.insert("control".into(), control.into());
            desc.insert("address".into(), address.into());
        }
        Frame::Control {
            control,
            address,
            ci,
        } => {
            desc.insert("control".into(), control.into());
            desc.insert("address".into(), address.into());
            desc.insert("ci".into(), ci.into());
        }
        Frame::Long {
            control,
            address,
            ci,
            data,
        } => {
            desc.insert("control".into(), control.into());
            desc.insert("address".into(), address.into());
            desc.insert("ci".into(), ci.into());
            desc.insert("length".into(), data.len().into());
        }
    }
    out.insert("frame".into(), Json::Object(desc));
    let (ci, data) = match *f {
        Frame::Long {
            control, ci, data, ..
        } if control & 0x40 == 0 => (ci, data),
        // A control frame (L = 3) is C, A and CI alone: its header is the frame's, it has no
        // records whatever the CI (an application error without its code is unspecified).
        Frame::Control { control, ci, .. } if control & 0x40 == 0 && ci == 0x70 => (ci, &[][..]),
        Frame::Control { control, .. } if control & 0x40 == 0 => {
            out.insert("records".into(), Json::Array(Vec::new()));
            return Ok(Json::Object(out));
        }
        Frame::Long { ci, data, .. } => {
            // Master to slave (SND_UD): show the payload.
            out.insert("ci".into(), ci.into());
            out.insert("data".into(), hex(data).into());
            return Ok(Json::Object(out));
        }
        _ => return Ok(Json::Object(out)),
    };
    match record::decode(ci, data) {
        Err(DecodeError::Application(code)) => {
            out.insert(
                "error".into(),
                json!({"code": code, "message": record::app_error_text(code)}),
            );
        }
        Err(e @ DecodeError::UnsupportedCi(_)) => {
            // A valid frame whose application layer this decoder does not read: its bytes.
            out.insert("data".into(), hex(data).into());
            out.insert("note".into(), e.to_string().into());
        }
        Err(e) => return Err(e),
        Ok(ud) => {
            out.insert("header".into(), header(&ud.header));
            let recs: Vec<Record<'_>> = ud.records().collect::<Result<_, _>>()?;
            let names = unique_names(&recs);
            let list: Vec<Json> = recs.iter().zip(names).map(|(r, n)| record(r, n)).collect();
            out.insert("records".into(), Json::Array(list));
        }
    }
    Ok(Json::Object(out))
}

/// Bytes as space-separated hex.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02X}"));
    }
    s
}

/// A meter found by a scan: how to address it, and the header of its first telegram (when it
/// answered one).
pub fn found(f: &super::link::Found) -> Json {
    let header = f
        .telegram
        .as_deref()
        .and_then(|t| super::frame::parse(t).ok())
        .and_then(|fr| frame(&fr).ok())
        .and_then(|j| j.get("header").cloned());
    serde_json::json!({"address": f.address, "header": header})
}

#[cfg(test)]
mod tests;
