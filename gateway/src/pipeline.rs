//! The request pipeline: Pingora's `ProxyHttp` hooks, admission (checks → route → auth →
//! limits → mapping → dispatch), the request context, and the head sent upstream. See
//! docs/architecture.md.

pub mod admit;
pub mod attempts;
pub mod authn;
pub mod checks;
pub mod cors;
pub mod counting;
pub mod ctx;
pub mod failure;
pub mod gateway;
pub mod inbound;
pub mod logging;
pub mod mapped;
pub mod outbound;
pub mod respond;
pub mod routing;
pub mod session;
pub mod streamed;
pub mod underscores;
