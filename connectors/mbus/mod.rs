//! The M-Bus connector (`"protocol": "mbus"`): wired M-Bus meters (EN 13757-2/-3).

pub mod frame;
pub mod record;
