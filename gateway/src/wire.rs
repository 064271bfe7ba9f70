//! The HTTP/1 wire and the request target: head checks, body framing, path normalization —
//! pure functions over bytes, no I/O.

pub mod framing;
pub mod head;
pub mod target;
