//! OPC-UA values to readings and back: a `Variant` becomes a reading's [`Value`] (scalars as
//! they are, arrays as JSON text), a `StatusCode` its quality (the code's name as the reason
//! when it is not good), the source timestamp its `ts`; an array element channel takes its
//! element from what the server sends; a raw value to write becomes a `Variant` of the node's
//! own DataType, refused when it does not fit.

use std::sync::Arc;

use opcua::types::{DataValue, NodeId, StatusCode, Variant, VariantScalarTypeId};

use osgate_core::reading::{Timestamp, Value};

/// The reading value of `v`; `None` for an empty Variant. Scalars map to bool, i64, u64, f64
/// or text; arrays (of any dimensions, flattened) become JSON text.
pub fn to_value(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Empty => return None,
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(*x as i64),
        Variant::Int16(x) => Value::I64(*x as i64),
        Variant::Int32(x) => Value::I64(*x as i64),
        Variant::Int64(x) => Value::I64(*x),
        Variant::Byte(x) => Value::U64(*x as u64),
        Variant::UInt16(x) => Value::U64(*x as u64),
        Variant::UInt32(x) => Value::U64(*x as u64),
        Variant::UInt64(x) => Value::U64(*x),
        Variant::Float(x) => Value::F64(*x as f64),
        Variant::Double(x) => Value::F64(*x),
        Variant::String(s) => Value::Text(s.as_ref().into()),
        Variant::LocalizedText(t) => Value::Text(t.text.as_ref().into()),
        Variant::DateTime(t) => Value::Text(t.as_chrono().to_rfc3339().into()),
        Variant::ByteString(b) => Value::Text(b.as_base64().into()),
        Variant::StatusCode(c) => Value::Text(status_name(*c).into()),
        Variant::Variant(inner) => return to_value(inner),
        Variant::ExtensionObject(_) => Value::Text("(structure)".into()),
        Variant::Array(a) => {
            let items: Vec<serde_json::Value> = a.values.iter().map(to_json).collect();
            Value::Text(serde_json::Value::Array(items).to_string().into())
        }
        other => Value::Text(other.to_string().into()),
    })
}

/// One array element as JSON.
fn to_json(v: &Variant) -> serde_json::Value {
    use serde_json::Value as J;
    match to_value(v) {
        None => J::Null,
        Some(Value::Bool(b)) => J::Bool(b),
        Some(Value::I64(x)) => J::from(x),
        Some(Value::U64(x)) => J::from(x),
        Some(Value::F64(x)) => serde_json::Number::from_f64(x).map_or(J::Null, J::Number),
        Some(Value::Text(t)) => match v {
            // Nested arrays stay structured.
            Variant::Array(_) => serde_json::from_str(&t).unwrap_or(J::String(t.to_string())),
            _ => J::String(t.to_string()),
        },
    }
}

/// The name of a status code (`BadNodeIdUnknown`, `UncertainLastUsableValue`).
pub fn status_name(code: StatusCode) -> &'static str {
    if code.is_good() {
        "Good"
    } else {
        code.sub_code().name()
    }
}

/// What a data value brings: its value and timestamp, or why it is not good. A status that is
/// not good (bad or uncertain) makes the reading bad with the code's name as the reason.
pub fn reading(dv: &DataValue) -> Result<(Value, Timestamp), (Arc<str>, Timestamp)> {
    let ts = timestamp(dv);
    let status = dv.status.unwrap_or(StatusCode::Good);
    if !status.is_good() {
        return Err((status_name(status).into(), ts));
    }
    match dv.value.as_ref().and_then(to_value) {
        Some(v) => Ok((v, ts)),
        None => Err(("the server sent no value".into(), ts)),
    }
}

/// What a data value read with the IndexRange of element `index` brings (see [`element`]);
/// without an index, [`reading`].
pub fn reading_at(
    dv: &DataValue,
    index: Option<u32>,
) -> Result<(Value, Timestamp), (Arc<str>, Timestamp)> {
    let Some(i) = index else {
        return reading(dv);
    };
    let ts = timestamp(dv);
    let status = dv.status.unwrap_or(StatusCode::Good);
    if !status.is_good() {
        return Err((index_reason(status, i), ts));
    }
    match element(dv.value.as_ref(), i).map(to_value) {
        Ok(Some(v)) => Ok((v, ts)),
        Ok(None) => Err(("the server sent no value".into(), ts)),
        Err(why) => Err((why.into(), ts)),
    }
}

/// Element `i` of a value read with the IndexRange of `i`. A server that honours the range
/// sends an array of that one element; one that ignores it (python asyncua) sends the whole
/// array, and the element is taken from it.
pub fn element(v: Option<&Variant>, i: u32) -> Result<&Variant, String> {
    match v {
        None | Some(Variant::Empty) => Err("the server sent no value".into()),
        Some(Variant::Array(a)) if a.values.len() == 1 => Ok(&a.values[0]),
        Some(Variant::Array(a)) => a.values.get(i as usize).ok_or_else(|| {
            format!(
                "index {i} is not in the node's array ({} elements)",
                a.values.len()
            )
        }),
        Some(_) => Err(format!(
            "index {i} is set, but the node's value is not an array"
        )),
    }
}

/// The reason of a status that is not good for the channel of array element `index`: an
/// IndexRange code names the index (`BadIndexRangeNoData: index 9 is not in the node's
/// array`), others are their name.
pub fn index_reason(code: StatusCode, index: u32) -> Arc<str> {
    let name = status_name(code);
    if matches!(
        code,
        StatusCode::BadIndexRangeInvalid | StatusCode::BadIndexRangeNoData
    ) {
        format!("{name}: index {index} is not in the node's array").into()
    } else {
        name.into()
    }
}

/// The source timestamp, else the server's, else now.
pub fn timestamp(dv: &DataValue) -> Timestamp {
    dv.source_timestamp
        .or(dv.server_timestamp)
        .filter(|t| !t.is_null())
        .map(|t| Timestamp(t.as_chrono().timestamp_millis()))
        .unwrap_or_else(Timestamp::now)
}

/// The scalar type of a DataType node id, when it is a built-in type or one of the common
/// subtypes; `None` for others (the caller falls back to the type of the current value).
pub fn scalar_type(data_type: &NodeId) -> Option<VariantScalarTypeId> {
    use VariantScalarTypeId as T;
    if data_type.namespace != 0 {
        return None;
    }
    let opcua::types::Identifier::Numeric(id) = data_type.identifier else {
        return None;
    };
    Some(match id {
        1 => T::Boolean,
        2 => T::SByte,
        3 => T::Byte,
        4 => T::Int16,
        5 => T::UInt16,
        6 => T::Int32,
        7 => T::UInt32,
        8 => T::Int64,
        9 => T::UInt64,
        10 => T::Float,
        11 | 290 => T::Double, // Double, Duration
        12 | 295 => T::String, // String, LocaleId
        13 | 294 => T::DateTime,
        29 => T::Int32, // Enumeration
        _ => return None,
    })
}

/// `raw` as a Variant of type `ty`: integers must be whole and in range, bools take 0/1 too.
pub fn to_variant(raw: &Value, ty: VariantScalarTypeId) -> Result<Variant, String> {
    use VariantScalarTypeId as T;
    fn int(raw: &Value) -> Result<i128, String> {
        match raw {
            Value::I64(x) => Ok(*x as i128),
            Value::U64(x) => Ok(*x as i128),
            Value::Bool(b) => Ok(*b as i128),
            Value::F64(x) if x.fract() == 0.0 && x.is_finite() => Ok(*x as i128),
            Value::F64(x) => Err(format!("{x} is not a whole number")),
            Value::Text(t) => Err(format!("\"{t}\" is not a number")),
        }
    }
    fn fit<T: TryFrom<i128>>(x: i128, ty: VariantScalarTypeId) -> Result<T, String> {
        T::try_from(x).map_err(|_| format!("{x} does not fit the node's type {ty}"))
    }
    let not_text = |what: &str| match raw {
        Value::Text(t) => Err(format!("\"{t}\" is not {what}")),
        _ => Ok(()),
    };
    Ok(match ty {
        T::Boolean => match raw {
            Value::Bool(b) => Variant::Boolean(*b),
            other => match int(other)? {
                0 => Variant::Boolean(false),
                1 => Variant::Boolean(true),
                x => return Err(format!("{x} is not a boolean (0 or 1)")),
            },
        },
        T::SByte => Variant::SByte(fit(int(raw)?, ty)?),
        T::Byte => Variant::Byte(fit(int(raw)?, ty)?),
        T::Int16 => Variant::Int16(fit(int(raw)?, ty)?),
        T::UInt16 => Variant::UInt16(fit(int(raw)?, ty)?),
        T::Int32 => Variant::Int32(fit(int(raw)?, ty)?),
        T::UInt32 => Variant::UInt32(fit(int(raw)?, ty)?),
        T::Int64 => Variant::Int64(fit(int(raw)?, ty)?),
        T::UInt64 => Variant::UInt64(fit(int(raw)?, ty)?),
        T::Float | T::Double => {
            not_text("a number")?;
            let x = raw.as_f64().unwrap_or(f64::NAN);
            if ty == T::Float {
                if x.is_finite() && x.abs() > f32::MAX as f64 {
                    return Err(format!("{x} does not fit the node's type Float"));
                }
                Variant::Float(x as f32)
            } else {
                Variant::Double(x)
            }
        }
        T::String => Variant::String(raw.to_string().into()),
        other => return Err(format!("writing the node's type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{Array, DateTime, LocalizedText};

    #[test]
    fn scalars_and_arrays_become_values() {
        assert_eq!(to_value(&Variant::Double(21.5)), Some(Value::F64(21.5)));
        assert_eq!(to_value(&Variant::UInt32(7)), Some(Value::U64(7)));
        assert_eq!(to_value(&Variant::Int16(-7)), Some(Value::I64(-7)));
        assert_eq!(to_value(&Variant::Boolean(true)), Some(Value::Bool(true)));
        assert_eq!(to_value(&Variant::Empty), None);
        assert_eq!(
            to_value(&Variant::String("on".into())),
            Some(Value::Text("on".into()))
        );
        assert_eq!(
            to_value(&Variant::LocalizedText(Box::new(LocalizedText::new(
                "en", "Run"
            )))),
            Some(Value::Text("Run".into()))
        );
        let a = Array::new(
            VariantScalarTypeId::Double,
            vec![Variant::Double(1.5), Variant::Double(2.0)],
        )
        .unwrap();
        assert_eq!(
            to_value(&Variant::Array(Box::new(a))),
            Some(Value::Text("[1.5,2.0]".into()))
        );
    }

    #[test]
    fn status_and_timestamps() {
        let mut dv = DataValue::value_only(Variant::Double(1.0));
        dv.status = Some(StatusCode::BadNodeIdUnknown);
        let (why, _) = reading(&dv).unwrap_err();
        assert_eq!(&*why, "BadNodeIdUnknown");
        dv.status = Some(StatusCode::UncertainLastUsableValue);
        assert_eq!(&*reading(&dv).unwrap_err().0, "UncertainLastUsableValue");
        dv.status = Some(StatusCode::Good);
        let t = DateTime::now();
        dv.source_timestamp = Some(t);
        let (v, ts) = reading(&dv).unwrap();
        assert_eq!(v, Value::F64(1.0));
        assert_eq!(ts.0, t.as_chrono().timestamp_millis());
    }

    #[test]
    fn array_elements() {
        let a = |vals: Vec<Variant>| {
            let t = vals[0].scalar_type_id().unwrap();
            Variant::Array(Box::new(Array::new(t, vals).unwrap()))
        };
        // A server that honours the IndexRange: one element.
        let mut dv = DataValue::value_only(a(vec![Variant::Double(7.0)]));
        assert_eq!(reading_at(&dv, Some(3)).unwrap().0, Value::F64(7.0));
        // One that ignores it: the whole array, the element taken from it.
        let whole = a((0..5).map(|i| Variant::Int32(i * 10)).collect());
        dv.value = Some(whole);
        assert_eq!(reading_at(&dv, Some(3)).unwrap().0, Value::I64(30));
        let (why, _) = reading_at(&dv, Some(9)).unwrap_err();
        assert_eq!(&*why, "index 9 is not in the node's array (5 elements)");
        // Without an index the whole array is text, as before.
        assert_eq!(
            reading_at(&dv, None).unwrap().0,
            Value::Text("[0,10,20,30,40]".into())
        );
        dv.value = Some(Variant::Double(1.0));
        assert!(reading_at(&dv, Some(0))
            .unwrap_err()
            .0
            .contains("not an array"));
        dv.status = Some(StatusCode::BadIndexRangeNoData);
        assert_eq!(
            &*reading_at(&dv, Some(9)).unwrap_err().0,
            "BadIndexRangeNoData: index 9 is not in the node's array"
        );
        assert_eq!(
            &*index_reason(StatusCode::BadNodeIdUnknown, 1),
            "BadNodeIdUnknown"
        );
    }

    #[test]
    fn writes_take_the_node_type_or_are_refused() {
        use VariantScalarTypeId as T;
        assert_eq!(
            to_variant(&Value::F64(42.5), T::Double),
            Ok(Variant::Double(42.5))
        );
        assert_eq!(
            to_variant(&Value::F64(7.0), T::UInt16),
            Ok(Variant::UInt16(7))
        );
        assert!(to_variant(&Value::F64(7.5), T::UInt16).is_err());
        assert!(to_variant(&Value::I64(-1), T::UInt32)
            .unwrap_err()
            .contains("UInt32"));
        assert!(to_variant(&Value::I64(300), T::Byte).is_err());
        assert_eq!(
            to_variant(&Value::F64(1.0), T::Boolean),
            Ok(Variant::Boolean(true))
        );
        assert!(to_variant(&Value::Text("x".into()), T::Double).is_err());
        assert!(to_variant(&Value::F64(1.0), T::Guid).is_err());
        assert_eq!(scalar_type(&NodeId::new(0, 11u32)), Some(T::Double));
        assert_eq!(scalar_type(&NodeId::new(0, 290u32)), Some(T::Double));
        assert_eq!(scalar_type(&NodeId::new(2, 11u32)), None);
    }
}
