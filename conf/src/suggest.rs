//! "Did you mean …?" for unknown keys and names: the nearest candidate by edit distance.

/// The candidate closest to `wrong`, if it is close enough to be a plausible typo.
pub fn nearest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(wrong, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(wrong.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Deserializes the map form of a setting that may also be written as a scalar (`listen`,
/// `backplane`, a fan-in upstream…), with the same "did you mean" messages as the rest of the
/// config: serde_yaml 0.9 reads enums from YAML tags, so these forms go through a `Value`.
pub(crate) fn from_map<T, E>(value: serde_yaml::Value) -> Result<T, E>
where
    T: serde::de::DeserializeOwned,
    E: serde::de::Error,
{
    serde_yaml::from_value(value).map_err(|e| E::custom(improve_serde_message(&e.to_string())))
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" (and the same for variants)
/// into a shorter message with the nearest valid key.
pub fn improve_serde_message(message: &str) -> String {
    for kind in ["unknown field", "unknown variant"] {
        let Some(rest) = message.strip_prefix(kind) else {
            continue;
        };
        let mut quoted = rest.split('`').skip(1).step_by(2);
        let Some(wrong) = quoted.next() else {
            break;
        };
        let candidates: Vec<&str> = quoted.collect();
        let what = if kind == "unknown field" {
            "key"
        } else {
            "value"
        };
        let mut out = format!("unknown {what} `{wrong}`");
        match nearest(wrong, candidates.iter().copied()) {
            Some(best) => out.push_str(&format!(" (did you mean `{best}`?)")),
            None if !candidates.is_empty() => {
                out.push_str(&format!("; valid {what}s: {}", candidates.join(", ")))
            }
            None => {}
        }
        return out;
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_key() {
        let msg =
            "unknown field `upstrem`, expected one of `name`, `match`, `upstream`, `longpoll`";
        assert_eq!(
            improve_serde_message(msg),
            "unknown key `upstrem` (did you mean `upstream`?)"
        );
    }

    #[test]
    fn lists_keys_when_nothing_is_close() {
        let msg = "unknown field `zzzzzzzz`, expected `name` or `match`";
        assert_eq!(
            improve_serde_message(msg),
            "unknown key `zzzzzzzz`; valid keys: name, match"
        );
    }

    #[test]
    fn leaves_other_messages_alone() {
        assert_eq!(improve_serde_message("invalid type"), "invalid type");
    }
}
