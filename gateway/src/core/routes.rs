//! The route table: every route's host, method and path conditions compiled into one lookup
//! structure at config load (matchit radix trees, one per host name plus one for any host), so a
//! request costs one tree walk.

use crate::core::spec::channel::{LongPollSpec, PublishSpec};
use crate::core::upstream::Pool;
use conf::FieldError;
use std::collections::HashMap;
use std::sync::Arc;

/// What the resolver gives for each route: its action, and its compiled auth and mapping.
pub struct RouteParts {
    pub action: Action,
    pub auth: Option<Arc<auth::RouteRequirement>>,
    pub mapping: Option<Arc<mapping::RouteMapping>>,
}

/// What a route does, with its references resolved at compile time.
pub enum Action {
    Proxy(Arc<Pool>),
    LongPoll(LongPollSpec),
    Publish(PublishSpec),
    /// An `upstream` route answered locally: it re-polls, coalesces or caches.
    Call(Arc<crate::core::spec::call::CallSpec>),
    Fanin(Arc<crate::core::spec::fanin::FaninSpec>),
    Job(Arc<crate::core::spec::job::JobSpec>),
    /// The model aliases of `llm:`, behind OpenAI's and Anthropic's front doors.
    Llm(Arc<crate::core::spec::llm::LlmSpec>),
}

/// One route, ready for the request path.
pub struct CompiledRoute {
    pub name: Arc<str>,
    /// Upper-case methods; empty allows all.
    pub methods: Vec<http::Method>,
    pub action: Action,
    pub max_body: u64,
    /// Whether the route's path pattern has captures worth extracting.
    pub has_captures: bool,
    pub cors: Option<conf::Cors>,
    /// Who may call the route; `None` for open and `public` routes.
    pub auth: Option<Arc<auth::RouteRequirement>>,
    /// The route's `map:` rules, compiled.
    pub mapping: Option<Arc<mapping::RouteMapping>>,
    /// Rate and concurrency limits; `None` when the route has none.
    pub limits: Option<Arc<crate::limits::RouteLimits>>,
}

impl CompiledRoute {
    fn allows(&self, method: &http::Method) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

/// Named path captures of a matched request, in pattern order.
pub type Captures = Vec<(String, String)>;

/// The result of looking a request up.
pub enum Lookup<'a> {
    Found(&'a Arc<CompiledRoute>, Captures),
    /// The path matched routes, none of which take this method: the `Allow` value.
    MethodNotAllowed(String),
    NotFound,
}

#[derive(Default)]
struct PathTree {
    tree: matchit::Router<Vec<usize>>,
    /// matchit cannot hold two entries for one pattern: several routes on one path share an
    /// entry, tried in declaration order.
    entries: HashMap<String, usize>,
    lists: Vec<Vec<usize>>,
}

impl PathTree {
    fn add(&mut self, pattern: &str, route: usize) {
        if let Some(&list) = self.entries.get(pattern) {
            self.lists[list].push(route);
            return;
        }
        self.lists.push(vec![route]);
        self.entries
            .insert(pattern.to_owned(), self.lists.len() - 1);
    }

    fn build(&mut self) -> Result<(), String> {
        for (pattern, &list) in &self.entries {
            self.tree
                .insert(pattern.clone(), self.lists[list].clone())
                .map_err(|error| {
                    format!("path `{pattern}` conflicts with another route: {error}")
                })?;
        }
        Ok(())
    }
}

/// Every route, indexed by host and path.
pub struct RouteTable {
    routes: Vec<Arc<CompiledRoute>>,
    by_host: HashMap<String, PathTree>,
    /// `*.example.com` routes, by suffix (`.example.com`).
    by_wildcard: Vec<(String, PathTree)>,
    any_host: PathTree,
    /// Whether any route's action is answered by the gateway rather than proxied.
    answers_any: bool,
}

/// The matchit patterns that implement a route's `match`.
fn patterns(matcher: &conf::Match) -> Vec<String> {
    match (&matcher.path, &matcher.prefix) {
        (Some(path), _) => vec![path.clone()],
        (None, Some(prefix)) => {
            let base = prefix.trim_end_matches('/');
            vec![
                if base.is_empty() {
                    "/".to_owned()
                } else {
                    base.to_owned()
                },
                format!("{base}/"),
                format!("{base}/{{*holdfast_rest}}"),
            ]
        }
        (None, None) => vec!["/".to_owned(), "/{*holdfast_rest}".to_owned()],
    }
}

impl RouteTable {
    /// Compiles the routes; `resolve` turns each route's action into its runtime form.
    pub fn compile(
        config: &conf::Config,
        mut resolve: impl FnMut(usize, &conf::Route) -> Result<RouteParts, FieldError>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut by_host: HashMap<String, PathTree> = HashMap::new();
        let mut by_wildcard: Vec<(String, PathTree)> = Vec::new();
        let mut any_host = PathTree::default();
        for (index, route) in config.routes.iter().enumerate() {
            let parts = match resolve(index, route) {
                Ok(parts) => parts,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            let methods = route
                .matcher
                .methods
                .iter()
                .filter_map(|m| http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
            let has_captures = route
                .matcher
                .path
                .as_deref()
                .is_some_and(|p| p.contains('{'));
            let position = routes.len();
            routes.push(Arc::new(CompiledRoute {
                name: Arc::from(route.name.as_str()),
                methods,
                action: parts.action,
                auth: parts.auth,
                mapping: parts.mapping,
                max_body: route.max_body.unwrap_or(config.limits.max_body).get(),
                has_captures,
                cors: route.cors.clone(),
                limits: crate::limits::RouteLimits::compile(route),
            }));
            let add = |tree: &mut PathTree| {
                for pattern in patterns(&route.matcher) {
                    tree.add(&pattern, position);
                }
            };
            if route.matcher.host.is_empty() {
                add(&mut any_host);
            }
            for host in &route.matcher.host {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix('*') {
                    Some(suffix) => match by_wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, tree)) => add(tree),
                        None => {
                            let mut tree = PathTree::default();
                            add(&mut tree);
                            by_wildcard.push((suffix.to_owned(), tree));
                        }
                    },
                    None => add(by_host.entry(host).or_default()),
                }
            }
        }
        // Longest suffix first, so the most specific wildcard wins.
        by_wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let mut build = |tree: &mut PathTree| {
            if let Err(message) = tree.build() {
                errors.push(FieldError::new("routes", message));
            }
        };
        build(&mut any_host);
        by_host.values_mut().for_each(&mut build);
        by_wildcard.iter_mut().for_each(|(_, tree)| build(tree));
        if errors.is_empty() {
            let answers_any = routes
                .iter()
                .any(|route| !matches!(route.action, Action::Proxy(_)));
            Ok(Self {
                routes,
                by_host,
                by_wildcard,
                any_host,
                answers_any,
            })
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a request. `host` is the Host header without its port.
    pub fn find(&self, host: Option<&str>, method: &http::Method, path: &str) -> Lookup<'_> {
        let host_trees = host.into_iter().flat_map(|host| {
            let exact = self.by_host.get(host);
            let wildcards = self
                .by_wildcard
                .iter()
                .filter(move |(suffix, _)| host.ends_with(suffix.as_str()))
                .map(|(_, tree)| tree);
            exact.into_iter().chain(wildcards)
        });
        for tree in host_trees.chain(std::iter::once(&self.any_host)) {
            let Ok(found) = tree.tree.at(path) else {
                continue;
            };
            let candidates = found.value;
            if let Some(&index) = candidates.iter().find(|&&i| self.routes[i].allows(method)) {
                let route = &self.routes[index];
                let captures = if route.has_captures {
                    found
                        .params
                        .iter()
                        .map(|(name, value)| (name.to_owned(), value.to_owned()))
                        .collect()
                } else {
                    Vec::new()
                };
                return Lookup::Found(route, captures);
            }
            let mut allow: Vec<&str> = candidates
                .iter()
                .flat_map(|&i| self.routes[i].methods.iter().map(http::Method::as_str))
                .collect();
            allow.sort_unstable();
            allow.dedup();
            return Lookup::MethodNotAllowed(allow.join(", "));
        }
        Lookup::NotFound
    }

    /// Whether any route is answered by the gateway (long-poll, publish, calls, fan-in, jobs).
    pub fn answers_any(&self) -> bool {
        self.answers_any
    }

    pub fn routes(&self) -> &[Arc<CompiledRoute>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(yaml: &str) -> RouteTable {
        let config = conf::load_str(Path::new("t.yaml"), yaml).expect("parses");
        RouteTable::compile(&config, |_, route| {
            let channel = crate::core::spec::channel::ChannelSpec::compile(
                &route.name,
                conf::ChannelMode::Broadcast,
            )
            .expect("spec");
            Ok(RouteParts {
                action: Action::Publish(PublishSpec { channel }),
                auth: None,
                mapping: None,
            })
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn name(table: &RouteTable, host: Option<&str>, method: &str, path: &str) -> String {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        match table.find(host, &method, path) {
            Lookup::Found(route, captures) => {
                let caps: Vec<String> = captures.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if caps.is_empty() {
                    route.name.to_string()
                } else {
                    format!("{} {}", route.name, caps.join(","))
                }
            }
            Lookup::MethodNotAllowed(allow) => format!("405 {allow}"),
            Lookup::NotFound => "404".to_owned(),
        }
    }

    const ROUTES: &str = r#"
routes:
  - { name: exact, match: { path: /poll, methods: [GET] }, publish: { channel: x } }
  - { name: push, match: { path: /poll, methods: [POST] }, publish: { channel: x } }
  - { name: user, match: { path: "/users/{id}" }, publish: { channel: x } }
  - { name: api, match: { prefix: /api }, publish: { channel: x } }
  - { name: apihost, match: { prefix: /api, host: api.example.com }, publish: { channel: x } }
  - { name: wild, match: { path: /w, host: "*.example.com" }, publish: { channel: x } }
"#;

    #[test]
    fn exact_prefix_pattern_host_and_method() {
        let t = table(ROUTES);
        assert_eq!(name(&t, None, "GET", "/poll"), "exact");
        assert_eq!(name(&t, None, "POST", "/poll"), "push");
        assert_eq!(name(&t, None, "PUT", "/poll"), "405 GET, POST");
        assert_eq!(name(&t, None, "GET", "/users/42"), "user id=42");
        assert_eq!(name(&t, None, "GET", "/api"), "api");
        assert_eq!(name(&t, None, "GET", "/api/"), "api");
        assert_eq!(name(&t, None, "GET", "/api/a/b"), "api");
        assert_eq!(name(&t, None, "GET", "/apix"), "404");
        assert_eq!(
            name(&t, Some("api.example.com"), "GET", "/api/x"),
            "apihost"
        );
        assert_eq!(name(&t, Some("other.example.com"), "GET", "/api/x"), "api");
        assert_eq!(name(&t, Some("a.example.com"), "GET", "/w"), "wild");
        assert_eq!(name(&t, None, "GET", "/w"), "404");
        assert_eq!(name(&t, None, "GET", "/nothing"), "404");
    }
}
