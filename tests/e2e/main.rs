//! End-to-end tests: the real `holdfast` binary, real upstream servers, a real Redis, all on
//! loopback. One module per capability, one test binary for the whole suite.

mod access_log;
mod auth;
mod backplanes;
mod config;
/// The deploy artefacts (deploy/, examples/), one module per kind of check, with the helpers they
/// share in `support`.
mod edge;
mod deploy {
    mod clients;
    mod compose;
    mod configs;
    mod dockerfile;
    mod kubernetes;
    mod monitoring;
    mod support;
    mod systemd;
}
mod limits;
mod llm;
mod llm_resume;
mod longpoll;
mod mapping;
mod metrics;
mod proxy;

mod security;
mod slow_subscribers;
mod streams;
mod subscriber_auth;
mod tls;
mod tracing;
mod upgrade;
mod upstream_calls;
mod upstream_tls;
mod websocket;
mod websocket_publish;
