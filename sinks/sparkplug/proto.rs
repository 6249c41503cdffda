//! The Sparkplug B payload (`sparkplug_b.proto` of Eclipse Sparkplug 3.0), written out as Rust
//! structs with `prost` derives, so building osgate needs no `protoc` and no build script.
//!
//! Only what an edge node sends and reads is declared: payload, metric, property sets and
//! property values. Data sets, templates, metadata and extensions are left out: prost skips
//! fields it does not know when it decodes a command, and osgate never sends them. Field
//! numbers and types are those of the official schema; the unit tests pin the bytes.

/// A Sparkplug B payload: the body of every message but `STATE`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was made (ms since the epoch).
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The message's sequence number (0–255); absent in NDEATH.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

/// One metric of a payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Name (births always; data by alias only).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias, unique within the edge node, announced in the birth.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// When the value was read (ms since the epoch).
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// One of [`DataType`] (births always; data may leave it out).
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// The value is old: it could not be delivered when it was read.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored as a tag.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The metric has no value (bad quality).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Properties (`engUnit`, `Quality`).
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The value.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// The value of a [`Metric`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8/16/32, UInt8/16/32 (two's complement in 32 bits).
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64, UInt64, DateTime (two's complement in 64 bits).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Named properties of a metric (`keys[i]` is the name of `values[i]`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// Names.
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// Values, in the order of `keys`.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// The value of a property.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// One of [`DataType`].
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// No value.
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "PropertyValueKind", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyValueKind>,
}

/// The value of a [`PropertyValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyValueKind {
    /// Int8/16/32, UInt8/16/32.
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    /// Int64, UInt64, DateTime.
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "5")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "6")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    /// String, Text.
    #[prost(string, tag = "8")]
    StringValue(String),
}

/// Sparkplug B data types (the numbers of the schema's `DataType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    /// Signed 8-bit integer.
    Int8 = 1,
    /// Signed 16-bit integer.
    Int16 = 2,
    /// Signed 32-bit integer.
    Int32 = 3,
    /// Signed 64-bit integer.
    Int64 = 4,
    /// Unsigned 8-bit integer.
    UInt8 = 5,
    /// Unsigned 16-bit integer.
    UInt16 = 6,
    /// Unsigned 32-bit integer.
    UInt32 = 7,
    /// Unsigned 64-bit integer.
    UInt64 = 8,
    /// 32-bit float.
    Float = 9,
    /// 64-bit float.
    Double = 10,
    /// Boolean.
    Boolean = 11,
    /// UTF-8 string.
    String = 12,
    /// Milliseconds since the epoch.
    DateTime = 13,
    /// UTF-8 text.
    Text = 14,
}

impl DataType {
    /// The type of a schema number, for the types osgate understands in commands.
    pub fn from_u32(n: u32) -> Option<DataType> {
        use DataType::*;
        Some(match n {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            12 => String,
            13 => DateTime,
            14 => Text,
            _ => return None,
        })
    }

    /// The name used in the specification (and in the README's mapping table).
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Int8 => "Int8",
            Int16 => "Int16",
            Int32 => "Int32",
            Int64 => "Int64",
            UInt8 => "UInt8",
            UInt16 => "UInt16",
            UInt32 => "UInt32",
            UInt64 => "UInt64",
            Float => "Float",
            Double => "Double",
            Boolean => "Boolean",
            String => "String",
            DateTime => "DateTime",
            Text => "Text",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn encodes_the_field_numbers_of_the_schema() {
        let p = Payload {
            timestamp: Some(1),
            seq: Some(2),
            metrics: vec![Metric {
                name: Some("a".into()),
                alias: Some(3),
                datatype: Some(DataType::Double as u32),
                value: Some(MetricValue::DoubleValue(0.0)),
                ..Default::default()
            }],
        };
        let bytes = p.encode_to_vec();
        // timestamp=1 (field 1, varint), metrics (field 2, length 16), seq=2 (field 3).
        assert_eq!(&bytes[..4], &[0x08, 1, 0x12, 16]);
        // name "a" (field 1), alias 3 (2), datatype 10 (4), double 0.0 (13, fixed64).
        assert_eq!(
            &bytes[4..20],
            &[0x0a, 1, b'a', 0x10, 3, 0x20, 10, 0x69, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&bytes[20..], &[0x18, 2]);
        assert_eq!(Payload::decode(&bytes[..]).unwrap(), p);
    }

    #[test]
    fn data_type_numbers_round_trip() {
        for n in 1..=14 {
            assert_eq!(DataType::from_u32(n).unwrap() as u32, n);
        }
        assert_eq!(DataType::from_u32(16), None);
    }
}
