//! Reading configuration text: one file, or every `*.yaml`/`*.yml` file of a directory merged
//! into one config (routes concatenated in file-name order, maps merged, each top-level setting
//! allowed in one file only).

use crate::config::Origin;
use crate::locate::Positions;
use crate::suggest::improve_serde_message;
use crate::{Config, ConfigError, ConfigErrors};
use std::path::{Path, PathBuf};

/// Loads the config at `path` (a file or a directory). Parse errors stop at the first error of
/// each file (serde's limit); call [`crate::validate`] next for the semantic checks.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let files = config_files(path)?;
    let mut errors = Vec::new();
    let mut parts = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match load_str(&file, &text) {
                Ok(config) => parts.push(config),
                Err(mut more) => errors.append(&mut more.0),
            },
            Err(error) => errors.push(file_error(&file, format!("cannot read: {error}"))),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    merge(parts)
}

/// Parses one file's text; `file` names it in errors.
pub fn load_str(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    // An empty file is an empty config, not a YAML error.
    let parsed = if text.trim().is_empty() {
        Ok(Config::default())
    } else {
        serde_yaml::from_str::<Config>(text)
    };
    let mut config =
        parsed.map_err(|error| ConfigErrors::single(yaml_error(file, text, &error)))?;
    config.origin = Origin {
        files: vec![(file.to_owned(), Positions::of(text))],
        routes: (0..config.routes.len()).map(|i| (0, i)).collect(),
    };
    Ok(config)
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| ConfigErrors::single(file_error(path, format!("cannot read: {error}"))))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|error| ConfigErrors::single(file_error(path, format!("cannot list: {error}"))))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|file| {
            matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) && file.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigErrors::single(file_error(
            path,
            "the directory holds no .yaml or .yml files".to_owned(),
        )));
    }
    Ok(files)
}

fn file_error(file: &Path, message: String) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: None,
        column: None,
        path: String::new(),
        message,
    }
}

/// serde_yaml's error, split into the field path, the message (with a suggestion for unknown
/// keys) and the position.
fn yaml_error(file: &Path, text: &str, error: &serde_yaml::Error) -> ConfigError {
    let mut rendered = error.to_string();
    if let Some(cut) = rendered.rfind(" at line ") {
        rendered.truncate(cut);
    }
    // serde_yaml prefixes the message with the path when it is nested: "routes[0].match: ...".
    let (path, message) = match rendered.split_once(": ") {
        Some((path, message)) if !path.contains(' ') && !path.is_empty() => {
            (path.to_owned(), message.to_owned())
        }
        _ => (String::new(), rendered),
    };
    let at = error
        .location()
        .map(|l| refine_position(text, (l.line(), l.column()), &message));
    ConfigError {
        file: file.to_owned(),
        line: at.map(|(line, _)| line),
        column: at.map(|(_, column)| column),
        path,
        message: improve_serde_message(&message),
    }
}

/// serde_yaml places an error raised by a field's own parser (a bad duration) at the start of
/// the enclosing map. Our messages quote the offending text in backticks: the first line from
/// there on that holds it is where the operator must look.
fn refine_position(text: &str, at: (usize, usize), message: &str) -> (usize, usize) {
    let Some(quoted) = message.split('`').nth(1).filter(|q| !q.is_empty()) else {
        return at;
    };
    text.lines()
        .enumerate()
        .skip(at.0.saturating_sub(1))
        .take(64)
        .find_map(|(i, line)| line.find(quoted).map(|column| (i + 1, column + 1)))
        .unwrap_or(at)
}

/// Merges the configs of a directory's files; a setting made in two files is an error.
fn merge(parts: Vec<Config>) -> Result<Config, ConfigErrors> {
    let mut merged = Config::default();
    let mut errors = Vec::new();
    let mut setter: [Option<PathBuf>; 10] = Default::default();
    for part in parts {
        let file_index = merged.origin.files.len();
        let (file, positions) = part.origin.files.into_iter().next().unwrap_or_default();
        let scalar_keys = [
            "listen",
            "admin",
            "server",
            "limits",
            "backplane",
            "channels",
            "access_log",
            "trusted_proxies",
            "tracing",
            "llm",
        ];
        for (slot, key) in scalar_keys.iter().enumerate() {
            if positions.find(key).is_none() {
                continue;
            }
            if let Some(first) = &setter[slot] {
                errors.push(ConfigError {
                    file: file.clone(),
                    line: positions.find(key).map(|p| p.0),
                    column: positions.find(key).map(|p| p.1),
                    path: (*key).to_owned(),
                    message: format!("already set in {}", first.display()),
                });
                continue;
            }
            setter[slot] = Some(file.clone());
            match *key {
                "listen" => merged.listen = part.listen.clone(),
                "admin" => merged.admin = part.admin.clone(),
                "server" => merged.server = part.server.clone(),
                "limits" => merged.limits = part.limits.clone(),
                "backplane" => merged.backplane = part.backplane.clone(),
                "access_log" => merged.access_log = part.access_log.clone(),
                "trusted_proxies" => merged.trusted_proxies = part.trusted_proxies.clone(),
                "tracing" => merged.tracing = part.tracing.clone(),
                "llm" => merged.llm = part.llm.clone(),
                _ => merged.channels = part.channels.clone(),
            }
        }
        merge_map(
            &mut merged.auth,
            part.auth,
            "auth",
            &file,
            &positions,
            &mut errors,
        );
        merge_map(
            &mut merged.upstreams,
            part.upstreams,
            "upstreams",
            &file,
            &positions,
            &mut errors,
        );
        for (local, route) in part.routes.into_iter().enumerate() {
            merged.routes.push(route);
            merged.origin.routes.push((file_index, local));
        }
        merged.origin.files.push((file, positions));
    }
    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn merge_map<T>(
    into: &mut std::collections::BTreeMap<String, T>,
    from: std::collections::BTreeMap<String, T>,
    section: &str,
    file: &Path,
    positions: &Positions,
    errors: &mut Vec<ConfigError>,
) {
    for (name, value) in from {
        if let std::collections::btree_map::Entry::Vacant(slot) = into.entry(name.clone()) {
            slot.insert(value);
        } else {
            let path = format!("{section}.{name}");
            let at = positions.find(&path);
            errors.push(ConfigError {
                file: file.to_owned(),
                line: at.map(|p| p.0),
                column: at.map(|p| p.1),
                path,
                message: format!("`{name}` is defined in another file too"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        load_str(Path::new("test.yaml"), text)
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let error = parse("routes:\n  - name: a\n    upstrem: x\n").unwrap_err();
        let error = &error.0[0];
        assert_eq!(error.line, Some(3));
        assert!(
            error.message.contains("did you mean `upstream`"),
            "{}",
            error.message
        );
        assert!(error.path.starts_with("routes[0]"), "{}", error.path);
    }

    #[test]
    fn malformed_duration_names_the_field() {
        let error = parse("upstreams:\n  ai:\n    targets: [127.0.0.1:1]\n    timeout: soon\n")
            .unwrap_err();
        let error = &error.0[0];
        assert_eq!(error.line, Some(4));
        assert!(
            error.message.contains("invalid duration `soon`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn unparsable_yaml_names_the_line() {
        let error = parse("listen: [unclosed\nroutes: []\n").unwrap_err();
        assert!(error.0[0].line.is_some());
        assert!(error.to_string().starts_with("test.yaml:"));
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        assert!(parse("  \n").is_ok());
    }
}
