//! Building the running gateway from a loaded configuration: the Pingora server with its proxy
//! service on the `listen` addresses, the admin service, and the background services (reload,
//! health checks). This is the only place that turns config into sockets and threads.

pub mod admin;
pub mod jwks;
pub mod reload;

use crate::app::admin::Admin;
use crate::app::reload::{HealthChecks, Reloader};
use crate::core::runtime::Runtime;
use crate::core::state::State;
use crate::hub::Hub;
use crate::observe::metrics::METRICS;
use crate::pipeline::gateway::Gateway;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::v2::server::default_h2_options;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::path::PathBuf;
use std::sync::Arc;

/// The hub's background tasks (idle sweeping, the Redis listener) need a runtime that lives as
/// long as the process; Pingora's service runtimes are its own, so the hub gets a small one.
fn start_hub(config: &conf::Config) -> Hub {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("holdfast-hub")
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&format!("cannot start the hub runtime: {error}")));
    if let conf::Backplane::Redis(redis) = &config.backplane {
        if let Err(error) = runtime.block_on(crate::backplane::Link::check(redis)) {
            fail(&format!(
                "cannot start the channel hub: backplane.redis: {error}"
            ));
        }
    }
    let hub = {
        let _entered = runtime.enter();
        crate::core::kv::init(config);
        Hub::start(config)
            .unwrap_or_else(|error| fail(&format!("cannot start the channel hub: {error}")))
    };
    let mut up = hub.up_changes();
    let watched = hub.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            METRICS.backplane_up.set(i64::from(*up.borrow_and_update()));
            METRICS
                .channels
                .set(i64::try_from(watched.channel_count()).unwrap_or(i64::MAX));
            tokio::select! {
                changed = up.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    });
    tracing::info!(backplane = hub.backplane(), "channel hub started");
    // The runtime must outlive every request: leak it deliberately, it lives as long as the process.
    std::mem::forget(runtime);
    hub
}

fn fail(message: &str) -> ! {
    tracing::error!("{message}");
    std::process::exit(2)
}

/// The proxy with its HTTP/2 settings: h2c accepted (connection.rs sends only connections that
/// begin with the HTTP/2 preface, or chose `h2` by ALPN), `server.max_concurrent_streams`, the
/// request-head size limit applied to HTTP/2 header lists too, and `limits.idle_timeout` for
/// connections with no open stream. All fixed at start.
fn http_proxy(server: &Arc<ServerConf>, runtime: &Arc<Runtime>) -> HttpProxy<Gateway> {
    let state = runtime.state.load();
    let mut proxy = pingora_proxy::http_proxy(
        server,
        Gateway {
            runtime: runtime.clone(),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    // An HTTP/2 connection with no stream open is closed like an idle HTTP/1 keep-alive one.
    // (Zero would close it before its first stream: then HTTP/2 connections have no idle limit.)
    let idle = state.config.limits.idle_timeout.get();
    options.h2_idle_timeout = (!idle.is_zero()).then_some(idle);
    proxy.server_options = Some(options);
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(state.config.server.max_concurrent_streams);
    h2.max_header_list_size(u32::try_from(state.max_header_bytes).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2);
    proxy
}

/// What connection.rs needs of one listener: for TLS its acceptor, whose certificates come
/// from the running state at every handshake.
fn connection_listener(
    listener: &conf::Listener,
    runtime: &Arc<Runtime>,
) -> crate::edge::connection::Listener {
    let certificates = runtime
        .state
        .load()
        .certificates
        .get(&listener.address)
        .cloned();
    let tls = certificates.map(|initial| {
        let resolver = Arc::new(crate::core::tls::sni::SniResolver {
            runtime: runtime.clone(),
            address: listener.address.clone(),
            initial,
        });
        Acceptor::from_server_config(crate::core::tls::server_config(resolver, listener.http2))
    });
    crate::edge::connection::Listener {
        tls,
        h2c: listener.h2c,
    }
}

/// Tells the process named in `server.pid_file` to hand over its listening sockets (SIGQUIT);
/// Pingora's bootstrap then waits for them on `server.upgrade_socket`.
fn ask_to_hand_over(server: &conf::Server) {
    let Some(pid_file) = &server.pid_file else {
        tracing::info!("no server.pid_file: send SIGQUIT to the running holdfast to hand over");
        return;
    };
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let Some(pid) = pid else {
        tracing::warn!(pid_file = %pid_file.display(), "no process id to upgrade from");
        return;
    };
    let quit = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGQUIT,
    );
    match quit {
        Ok(()) => tracing::info!(pid, "asked the running process to hand over"),
        Err(error) => tracing::warn!(pid, %error, "cannot signal the running process"),
    }
}

/// Records this process's id in `server.pid_file`, for the next upgrade.
fn write_pid_file(server: &conf::Server) {
    if let Some(pid_file) = &server.pid_file {
        if let Err(error) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(pid_file = %pid_file.display(), %error, "cannot write the pid file");
        }
    }
}

/// Starts serving `state` (loaded from `config_path`) and never returns. With `upgrade`, it
/// takes the listening sockets over from the running process.
pub fn run(state: State, config_path: PathBuf, upgrade: bool) -> ! {
    let config = state.config.clone();
    let server_settings = &config.server;
    let threads = match server_settings.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let grace = server_settings.shutdown_grace.get();
    let server_conf = ServerConf {
        threads,
        // One worker has nobody to steal from: Pingora's no-steal flavour (a current-thread
        // runtime) then saves the multi-thread scheduler's bookkeeping on every wake-up,
        // ~10-15 % of the CPU per proxied request here (bench/RESULTS.md).
        work_stealing: server_settings.work_stealing && threads > 1,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: server_settings.upstream_keepalive_pool,
        // Extra CAs for upstream TLS, besides the system roots.
        ca_file: server_settings
            .ca_file
            .as_ref()
            .map(|path| path.display().to_string()),
        upgrade_sock: server_settings.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    };
    let options = upgrade.then(|| Opt {
        upgrade: true,
        ..Opt::default()
    });
    let mut server = Server::new_with_opt_and_conf(options, server_conf);
    if upgrade {
        ask_to_hand_over(server_settings);
    }
    // With `upgrade`, this waits for the old process's sockets (and exits if none come).
    server.bootstrap();
    write_pid_file(server_settings);
    crate::core::outbound::init(
        pingora_core::connectors::ConnectorOptions::from_server_conf(&server.configuration),
    );

    let hub = start_hub(&config);
    let access_log = config.access_log.as_ref().map(|settings| {
        crate::observe::access_log::AccessLog::start(settings).unwrap_or_else(|error| {
            fail(&format!(
                "cannot open the access log {}: {error}",
                settings.path
            ))
        })
    });
    if let Some(settings) = &config.tracing {
        if let Err(error) = crate::observe::trace::install(settings) {
            fail(&format!("cannot start the span exporter: {error}"));
        }
    }
    let runtime = Arc::new(Runtime::new(state, config_path, hub, access_log));
    let connections = crate::edge::connection::Connections {
        proxy: Arc::new(http_proxy(&server.configuration, &runtime)),
        gateway: Gateway {
            runtime: runtime.clone(),
        },
        listeners: config
            .listen
            .iter()
            .map(|listener| connection_listener(listener, &runtime))
            .collect(),
        runtime: runtime.clone(),
    };
    // Our own accept loop (edge/listen.rs), not Pingora's listener: a connection then costs
    // only its own task. Reads go straight into the HTTP session's buffers (no L4 read
    // buffer); small writes are gathered by the fence. TLS handshakes are connection.rs's.
    server.add_service(crate::edge::listen::Listeners {
        connections: Arc::new(connections),
        addresses: config
            .listen
            .iter()
            .map(|listener| listener.address.clone())
            .collect(),
    });

    if let Some(address) = &config.admin {
        let mut admin = Service::new(
            "holdfast admin".to_owned(),
            HttpServer::new_app(Admin {
                runtime: runtime.clone(),
                listening: Default::default(),
            }),
        );
        admin.add_tcp(address);
        admin.threads = Some(1);
        server.add_service(admin);
    }
    server.add_service(background_service(
        "reload",
        Reloader {
            runtime: runtime.clone(),
            grace,
        },
    ));
    server.add_service(background_service(
        "health checks",
        HealthChecks {
            runtime: runtime.clone(),
        },
    ));
    server.add_service(background_service(
        "jwks",
        crate::app::jwks::JwksRefresher {
            runtime: runtime.clone(),
        },
    ));
    let listen: Vec<String> = config
        .listen
        .iter()
        .map(|listener| match (&listener.tls, listener.h2c) {
            (Some(_), _) => format!("https://{}", listener.address),
            (None, true) => format!("http://{} (h2c)", listener.address),
            (None, false) => format!("http://{}", listener.address),
        })
        .collect();
    tracing::info!(?listen, admin = ?config.admin, threads, "holdfast is starting");
    server.run_forever()
}
