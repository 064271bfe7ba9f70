//! The running configuration: everything compiled from one `conf::Config` — route table,
//! upstream pools, auth verifiers, mapping rules, limits — held behind an `ArcSwap` so a reload
//! swaps it atomically while in-flight requests finish on the state they started with.

use crate::core::routes::{Action, RouteParts, RouteTable};
use crate::core::spec::channel::{ChannelSpec, LongPollSpec, PublishSpec};
use crate::core::spec::job::{JobSpec, Work};
use crate::core::upstream::Pool;
use conf::{Config, ConfigErrors, FieldError, RouteAction};
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled configuration.
pub struct State {
    pub config: Arc<Config>,
    pub auth: Arc<auth::AuthSet>,
    pub routes: RouteTable,
    pub pools: Vec<Arc<Pool>>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_url_bytes: usize,
    pub trusted_proxies: crate::limits::TrustedProxies,
    /// Each TLS listener's certificates, by listen address.
    pub certificates: HashMap<String, Arc<crate::core::tls::sni::CertSet>>,
}

/// Load, validate and compile the config at `path`: every step `holdfast check` runs too.
/// `previous` is the running state on a reload (JWKS keys carry over).
pub fn load(path: &std::path::Path, previous: Option<&State>) -> Result<State, ConfigErrors> {
    let config = conf::load(path)?;
    conf::validate(&config)?;
    compile(config, previous)
}

/// Collects the errors of one compile step, keeping its value when it has none.
fn collect<T>(result: Result<T, Vec<FieldError>>, errors: &mut Vec<FieldError>) -> Option<T> {
    result.map_err(|mut more| errors.append(&mut more)).ok()
}

/// Compiles a validated config; resolving target names and reading key files are the only I/O.
pub fn compile(config: Config, previous: Option<&State>) -> Result<State, ConfigErrors> {
    let mut errors = Vec::new();
    let mut certificates = HashMap::new();
    let mut warnings = Vec::new();
    for (index, listener) in config.listen.iter().enumerate() {
        let Some(tls) = &listener.tls else { continue };
        let at = format!("listen[{index}]");
        let loaded = crate::core::tls::load_certificates(&at, tls, &mut warnings);
        if let Some(set) = collect(loaded, &mut errors) {
            certificates.insert(listener.address.clone(), Arc::new(set));
        }
    }
    // Placed like errors (file:line: field: …), but they do not stop the config.
    for warning in config.place(warnings).0 {
        tracing::warn!("{warning}");
    }
    let mut pools = HashMap::new();
    for (name, upstream) in &config.upstreams {
        match Pool::build(name, upstream) {
            Ok(pool) => {
                pools.insert(name.clone(), Arc::new(pool));
            }
            Err((field, message)) => errors.push(FieldError::new(
                format!("upstreams.{name}.{field}"),
                message,
            )),
        }
    }
    let auth = collect(
        auth::compile_reusing(&config, previous.map(|state| &*state.auth)),
        &mut errors,
    )
    .map(Arc::new);
    let mappings: Vec<Option<Arc<mapping::RouteMapping>>> = config
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let map = route.map.as_ref()?;
            let at = format!("routes[{index}].map");
            collect(
                mapping::RouteMapping::compile(map, route.matcher.path.as_deref(), &at),
                &mut errors,
            )
            .map(Arc::new)
        })
        .collect();
    let models = match crate::core::spec::llm::Models::compile(&config, &pools) {
        Ok(models) => models,
        Err(message) => {
            errors.push(FieldError::new("llm", message));
            Default::default()
        }
    };
    let routes = RouteTable::compile(&config, |index, route| {
        resolve_action(index, route, &pools, &models).map(|action| RouteParts {
            action,
            auth: auth.as_ref().and_then(|auth| auth.route(index).cloned()),
            mapping: mappings.get(index).cloned().flatten(),
        })
    });
    let routes = collect(routes, &mut errors);
    match (routes, auth) {
        (Some(routes), Some(auth)) if errors.is_empty() => Ok(State {
            max_header_bytes: config.limits.max_header_bytes.as_usize(),
            max_headers: config.limits.max_headers,
            max_url_bytes: config.limits.max_url_bytes.as_usize(),
            trusted_proxies: crate::limits::TrustedProxies::compile(&config.trusted_proxies),
            certificates,
            config: Arc::new(config),
            auth,
            routes,
            pools: pools.into_values().collect(),
        }),
        _ => Err(config.place(errors)),
    }
}

fn resolve_action(
    index: usize,
    route: &conf::Route,
    pools: &HashMap<String, Arc<Pool>>,
    models: &crate::core::spec::llm::Models,
) -> Result<Action, FieldError> {
    let at = format!("routes[{index}]");
    match route.action() {
        Some(RouteAction::Upstream(name)) => {
            let upstream_action = |pool| crate::core::spec::call::upstream_action(route, pool);
            pools
                .get(name)
                .cloned()
                .map(upstream_action)
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{at}.upstream"),
                        format!("upstream `{name}` is unavailable"),
                    )
                })
        }
        Some(RouteAction::LongPoll(longpoll)) => {
            ChannelSpec::compile(&longpoll.channel, longpoll.mode)
                .map(|channel| {
                    Action::LongPoll(LongPollSpec::compile(
                        &route.name,
                        channel,
                        longpoll.clone(),
                    ))
                })
                .map_err(|message| FieldError::new(format!("{at}.longpoll.channel"), message))
        }
        Some(RouteAction::Publish(publish)) => ChannelSpec::compile(&publish.channel, publish.mode)
            .map(|channel| Action::Publish(PublishSpec { channel }))
            .map_err(|message| FieldError::new(format!("{at}.publish.channel"), message)),
        Some(RouteAction::Fanin(fanin)) => {
            crate::core::spec::fanin::FaninSpec::compile(route, fanin, pools)
                .map(|spec| Action::Fanin(Arc::new(spec)))
                .map_err(|message| FieldError::new(format!("{at}.fanin.upstreams"), message))
        }
        Some(RouteAction::Job(job)) => {
            let name = job.upstream.as_deref().unwrap_or_default();
            match pools.get(name) {
                Some(pool) => {
                    let work = JobSpec::upstream(route, pool.clone());
                    Ok(Action::Job(Arc::new(JobSpec::compile(route, job, work))))
                }
                None => Err(FieldError::new(
                    format!("{at}.job.upstream"),
                    format!("upstream `{name}` is unavailable"),
                )),
            }
        }
        Some(RouteAction::Llm(llm)) => {
            let spec = Arc::new(models.route(&route.name, llm));
            Ok(match &route.job {
                Some(job) => Action::Job(Arc::new(JobSpec::compile(route, job, Work::Llm(spec)))),
                None => Action::Llm(spec),
            })
        }
        None => Err(FieldError::new(at, "the route has no action")),
    }
}
