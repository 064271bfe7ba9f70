//! The edge: accepted connections, TLS, the HTTP/1 connection loop that reads and checks each
//! head before Pingora parses it, the HTTP/2 hand-off, and the path for requests the gateway
//! answers itself. See docs/architecture.md.

pub mod answered;
pub mod connection;
pub mod fence;
pub mod held;
pub mod http1;
pub mod listen;
pub mod plain;
