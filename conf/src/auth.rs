//! The schema of auth providers (`auth:` at the top) and of a route's `auth:`.
//! (Placeholder shape until the auth issue fills it in.)

use serde::Deserialize;

/// One named auth provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    #[serde(default)]
    pub jwt: Option<serde_yaml::Value>,
    #[serde(default)]
    pub api_keys: Option<serde_yaml::Value>,
}

/// A route's `auth:` — which providers may vouch for the request, and what it must carry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Checks of the `auth` section and of routes' `auth:` that need only the config.
pub(crate) fn check(_config: &crate::Config, _errors: &mut Vec<crate::FieldError>) {}
