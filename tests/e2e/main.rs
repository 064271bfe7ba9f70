//! End-to-end tests: the real `holdfast` binary, real upstream servers, a real Redis, all on
//! loopback. One module per capability, one test binary for the whole suite.

mod access_log;
mod auth;
mod config;
mod deploy;
mod limits;
mod longpoll;
mod mapping;
mod proxy;
mod security;
mod tls;
mod upstream_calls;
mod upstream_tls;
