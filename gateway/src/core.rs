//! What every layer above shares: the route table and its actions, the compiled state, the
//! runtime, upstream pools and the connector, certificates. See docs/architecture.md.

pub mod kv;
pub mod outbound;
pub mod routes;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod tls;
pub mod upstream;
