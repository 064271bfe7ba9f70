//! What each route action needs at request time, compiled at load: the specs the route table's
//! `Action` carries.

pub mod call;
pub mod channel;
pub mod coalesce;
pub mod fanin;
pub mod job;
pub mod llm;
