//! The schema of a route's `map:` — request and response rewrite rules.
//! (Placeholder shape until the mapping issue fills it in.)

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMap {
    #[serde(default)]
    pub request: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub response: Vec<serde_yaml::Value>,
}

/// Checks of routes' `map:` sections that need only the config.
pub(crate) fn check(_config: &crate::Config, _errors: &mut Vec<crate::FieldError>) {}
