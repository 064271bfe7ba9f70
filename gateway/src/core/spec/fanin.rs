//! A compiled `fanin` action: its upstreams resolved to pools, and when and how to answer.

use crate::core::spec::call::CallOptions;
use crate::core::upstream::Pool;
use std::sync::Arc;
use std::time::Duration;

/// One upstream of a fan-in, resolved.
pub struct Member {
    pub name: Arc<str>,
    pub pool: Arc<Pool>,
    pub timeout: Option<Duration>,
    pub required: bool,
    pub path: Option<String>,
}

/// A compiled `fanin` action.
pub struct FaninSpec {
    pub members: Vec<Member>,
    pub until: conf::Until,
    pub merge: conf::Merge,
    pub partial: bool,
    pub options: CallOptions,
}

impl FaninSpec {
    /// Resolves the upstream names; `Err` names the first unknown one.
    pub fn compile(
        route: &conf::Route,
        fanin: &conf::Fanin,
        pools: &std::collections::HashMap<String, Arc<Pool>>,
    ) -> Result<Self, String> {
        let members = fanin
            .upstreams
            .iter()
            .map(|upstream| {
                pools
                    .get(&upstream.name)
                    .map(|pool| Member {
                        name: Arc::from(upstream.name.as_str()),
                        pool: pool.clone(),
                        timeout: upstream.timeout.map(conf::Duration::get),
                        required: upstream.required,
                        path: upstream.path.clone(),
                    })
                    .ok_or_else(|| format!("upstream `{}` is unavailable", upstream.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            members,
            until: fanin.until,
            merge: fanin.merge,
            partial: fanin.partial,
            options: CallOptions::compile(route),
        })
    }
}
