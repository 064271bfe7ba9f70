//! A rule's compiled `when:` — every test given must hold. The regex is built at load.

use crate::error::MappingError;
use crate::value::{loosely_equal, text};
use crate::view::View;
use crate::Sources;
use conf::mapping::Source;
use regex::Regex;
use serde_json::Value;

#[derive(Clone, Debug)]
pub(crate) struct Condition {
    pub exists: Option<Source>,
    pub absent: Option<Source>,
    /// The source that `equals` and `matches` test.
    pub place: Option<Source>,
    pub equals: Option<Value>,
    pub matches: Option<Regex>,
    /// Uppercase; empty means any method.
    pub methods: Vec<String>,
}

impl Condition {
    pub fn holds(&self, view: &mut View<'_>, sources: &Sources<'_>) -> Result<bool, MappingError> {
        if !self.methods.is_empty() {
            let method = view.method().unwrap_or_default();
            if !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return Ok(false);
            }
        }
        if let Some(source) = &self.exists {
            if view.read(source, sources)?.is_none() {
                return Ok(false);
            }
        }
        if let Some(source) = &self.absent {
            if view.read(source, sources)?.is_some() {
                return Ok(false);
            }
        }
        if let Some(source) = &self.place {
            let Some(value) = view.read(source, sources)? else {
                return Ok(false);
            };
            if let Some(expected) = &self.equals {
                if !loosely_equal(&value, expected) {
                    return Ok(false);
                }
            }
            if let Some(regex) = &self.matches {
                if !text(&value).is_some_and(|text| regex.is_match(&text)) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
