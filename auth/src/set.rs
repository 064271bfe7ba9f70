//! The compiled auth of a whole config ([`AuthSet`]): every provider by name and every route's
//! requirement by route index. Built by [`crate::compile`], swapped whole on reload.

use crate::jwks::Jwks;
use crate::provider::Provider;
use crate::{AuthError, Identity, RouteRequirement};
use http::HeaderMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Every provider and route requirement of one config.
#[derive(Debug, Default)]
pub struct AuthSet {
    pub(crate) providers: BTreeMap<String, Arc<Provider>>,
    /// Indexed like `config.routes`; `None` for a route without `auth:` or with `public: true`.
    pub(crate) routes: Vec<Option<Arc<RouteRequirement>>>,
}

impl AuthSet {
    /// The requirement of `config.routes[index]`; `None` when the route is open (no `auth:`, or
    /// `public: true`) and nothing is to be checked or stripped.
    pub fn route(&self, index: usize) -> Option<&Arc<RouteRequirement>> {
        self.routes.get(index).and_then(Option::as_ref)
    }

    /// Authenticates a request for `route` (see [`RouteRequirement::authenticate`]).
    pub fn authenticate(
        &self,
        route: &RouteRequirement,
        headers: &HeaderMap,
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<Identity, AuthError> {
        route.authenticate(headers, query, now)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    /// The JWKS providers, for the gateway's fetch task (one per entry) and metrics.
    pub fn jwks(&self) -> impl Iterator<Item = &Arc<Jwks>> {
        self.providers.values().filter_map(|p| p.jwks())
    }

    /// Whether every JWKS provider has loaded keys (for `/readyz`).
    pub fn keys_ready(&self) -> bool {
        self.jwks().all(|jwks| jwks.has_keys())
    }
}
