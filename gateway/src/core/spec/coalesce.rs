//! A route's coalescing and answer-cache settings (`coalesce:`, `cache:`, `vary:`), and the key
//! of identical requests.

use std::time::Duration;

/// A route's coalescing settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Coalesce across identities.
    pub shared: bool,
    pub cache: Option<Duration>,
    pub vary: Vec<http::HeaderName>,
}

impl Settings {
    /// `None` when the route neither coalesces nor caches.
    pub fn compile(route: &conf::Route) -> Option<Self> {
        if route.coalesce.is_none() && route.cache.is_none() {
            return None;
        }
        Some(Self {
            shared: route.coalesce.is_some_and(|c| c.shared),
            cache: route.cache.map(conf::Duration::get),
            vary: route
                .vary
                .iter()
                .filter_map(|name| {
                    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()
                })
                .collect(),
        })
    }

    /// The key of identical requests.
    pub fn key(
        &self,
        route: &str,
        upstream: &str,
        header: &pingora_http::RequestHeader,
        identity: Option<&str>,
    ) -> String {
        let target = header.uri.path_and_query().map_or("/", |p| p.as_str());
        let identity = if self.shared {
            ""
        } else {
            identity.unwrap_or("")
        };
        let mut key = format!(
            "{route}\0{upstream}\0{}\0{target}\0{identity}",
            header.method
        );
        for name in &self.vary {
            key.push('\0');
            for value in header.headers.get_all(name) {
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                key.push('\u{1}');
            }
        }
        key
    }
}
