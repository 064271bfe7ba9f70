//! End-to-end tests: the real `holdfast` binary, real upstream servers, a real Redis, all on
//! loopback. One module per capability, one test binary for the whole suite.

mod config;
mod longpoll;
mod proxy;
