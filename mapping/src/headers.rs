//! Header rules the engine enforces: which values may be written (no control characters — a
//! CR/LF could split the header and smuggle another), which names belong to the gateway, and
//! the difference between two header lists for the gateway to apply to Pingora's header map.

/// Names the rules may not write, rename, move or remove: message framing and hop-by-hop
/// headers, which the gateway and Pingora manage.
pub(crate) const MANAGED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Names a `keep` on headers never drops: the managed ones, `host` and `content-type`.
pub(crate) fn always_kept(name: &str) -> bool {
    name == "host" || name == "content-type" || MANAGED.contains(&name)
}

/// Whether `value` may be written into a header: no CR, LF, NUL or any other control character
/// but horizontal tab. A value that fails is never written; the rule fails with 400, whatever
/// `required` says, because the value came from the client, a token or an upstream.
pub fn is_safe_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// How to bring one header list to another: for each name in `set`, remove every value it has
/// and append these values in order (an empty list removes the header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderDiff {
    pub set: Vec<(String, Vec<String>)>,
}

/// The names whose values (or their order) differ between `before` and `after`.
pub fn diff(before: &[(String, String)], after: &[(String, String)]) -> HeaderDiff {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in before.iter().chain(after) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let values = |list: &[(String, String)], name: &str| -> Vec<String> {
        list.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let set = names
        .into_iter()
        .filter_map(|name| {
            let new = values(after, name);
            (values(before, name) != new).then(|| (name.to_owned(), new))
        })
        .collect();
    HeaderDiff { set }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn control_characters_are_unsafe() {
        assert!(is_safe_value("Bearer abc\tdef ✓"));
        for bad in [
            "a\r\nx-admin: 1",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\x01b",
            "a\x7fb",
        ] {
            assert!(!is_safe_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn diff_names_only_what_changed() {
        let before = list(&[("host", "a"), ("x-a", "1"), ("x-b", "1"), ("x-b", "2")]);
        let after = list(&[("host", "a"), ("x-b", "1"), ("x-c", "3"), ("x-b", "2")]);
        let diff = diff(&before, &after);
        assert_eq!(
            diff.set,
            vec![
                ("x-a".to_owned(), vec![]),
                ("x-c".to_owned(), vec!["3".to_owned()])
            ]
        );
    }
}
