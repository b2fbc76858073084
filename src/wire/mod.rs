//! Ground: the HTTP vocabulary every layer shares. Field names and values (built once,
//! interned), and the gateway's own error answers with their status, fields and JSON
//! body. Imports nothing of the crate.

mod answer;
mod fields;

pub use answer::GatewayError;
pub use fields::{names, static_name, static_value, values};
