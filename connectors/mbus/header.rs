//! The header of an M-Bus telegram (EN 13757-3): identification number, manufacturer,
//! version, medium, access number, status and signature, and the texts of the medium codes
//! and of the application errors (CI `0x70`). [`super::record::decode`] fills it in from the
//! user data; the CLI and the scan print it.

/// The text of an application error code (EN 13757-3, CI 0x70).
pub fn app_error_text(code: u8) -> String {
    match code {
        0 => "unspecified error".into(),
        1 => "unimplemented CI field".into(),
        2 => "buffer too long, truncated".into(),
        3 => "too many records".into(),
        4 => "premature end of record".into(),
        5 => "more than 10 DIFEs".into(),
        6 => "more than 10 VIFEs".into(),
        7 => "reserved (code 7)".into(),
        8 => "application busy".into(),
        9 => "too many readouts".into(),
        c => format!("unknown application error 0x{c:02X}"),
    }
}

/// The fixed part of a variable-structure header, or what a short or fixed header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Identification number (4 bytes, least significant first, usually BCD); `None` with a
    /// short header.
    pub id: Option<[u8; 4]>,
    /// Manufacturer (three letters packed in 15 bits).
    pub manufacturer: Option<u16>,
    /// Version (generation) of the meter.
    pub version: Option<u8>,
    /// Medium code.
    pub medium: Option<u8>,
    /// Access number (transmission counter).
    pub access_number: u8,
    /// Status byte.
    pub status: u8,
    /// Signature (encryption), 0 when none.
    pub signature: u16,
}

impl Header {
    /// The identification number as printed on the meter (the BCD digits, or hex digits when
    /// it is not valid BCD).
    pub fn id_string(&self) -> Option<String> {
        self.id.map(u32::from_le_bytes).map(|v| format!("{v:08X}"))
    }

    /// The identification number as a number (`None` when not BCD).
    pub fn id_number(&self) -> Option<u32> {
        self.id_string()?.parse().ok()
    }

    /// The three-letter manufacturer code.
    pub fn manufacturer_code(&self) -> Option<String> {
        self.manufacturer.map(manufacturer_code)
    }

    /// The medium's name.
    pub fn medium_name(&self) -> Option<&'static str> {
        self.medium.map(medium_name)
    }
}

/// The three letters of a packed manufacturer id.
pub fn manufacturer_code(m: u16) -> String {
    [(m >> 10) & 0x1F, (m >> 5) & 0x1F, m & 0x1F]
        .iter()
        .map(|&c| char::from(c as u8 + 64))
        .collect()
}

/// Packs three letters into a manufacturer id (`None` unless three ASCII letters).
pub fn manufacturer_id(code: &str) -> Option<u16> {
    let b = code.as_bytes();
    if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    Some(b.iter().fold(0u16, |m, &c| (m << 5) | u16::from(c - 64)))
}

/// The name of a medium code (EN 13757-3 table "Medium").
pub fn medium_name(m: u8) -> &'static str {
    match m {
        0x00 => "other",
        0x01 => "oil",
        0x02 => "electricity",
        0x03 => "gas",
        0x04 => "heat (outlet)",
        0x05 => "steam",
        0x06 => "warm water",
        0x07 => "water",
        0x08 => "heat cost allocator",
        0x09 => "compressed air",
        0x0A => "cooling load (outlet)",
        0x0B => "cooling load (inlet)",
        0x0C => "heat (inlet)",
        0x0D => "heat / cooling load",
        0x0E => "bus / system",
        0x0F => "unknown medium",
        0x15 => "hot water",
        0x16 => "cold water",
        0x17 => "dual register water",
        0x18 => "pressure",
        0x19 => "A/D converter",
        0x1A => "smoke detector",
        0x1B => "room sensor",
        0x1C => "gas detector",
        0x20 => "breaker (electricity)",
        0x21 => "valve (gas or water)",
        0x25 => "customer unit",
        0x28 => "waste water",
        0x29 => "garbage",
        0x2A => "carbon dioxide",
        0x31 => "communication controller",
        0x32 => "unidirectional repeater",
        0x33 => "bidirectional repeater",
        0x36 => "radio converter (system side)",
        0x37 => "radio converter (meter side)",
        _ => "reserved",
    }
}
