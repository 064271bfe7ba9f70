//! The backplane's Redis, whatever its shape: one server, a Redis Cluster, or a master that
//! Sentinel fails over. [`Link`] is one connection to it that every Redis command of the
//! gateway goes through (channels, rate limits, jobs, kept answers), so none of them knows
//! which shape it talks to; [`KeyShape`] names keys so that what one script touches shares a
//! cluster slot. See docs/hub.md ("Redis Cluster and Sentinel").

mod keys;
mod link;
mod once;
mod sentinel;

pub use keys::KeyShape;
pub use link::{is_moving, is_outage, Link, LinkError};
pub use sentinel::Follower;
