//! Key names for one Redis or a cluster. In a cluster, every key a Lua script touches must be
//! in one slot, so a channel's keys (and its shard channel) share a hash tag: `prefix{b:name}`.
//! One Redis keeps the names it always had, so an upgrade finds the keys it left.

/// How keys are named: with or without hash tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyShape {
    Plain,
    Tagged,
}

impl KeyShape {
    /// `prefix` + `name`, with `name` as the hash tag when tagged; `suffix` follows the tag.
    pub fn key(self, prefix: &str, name: &str, suffix: &str) -> String {
        match self {
            KeyShape::Plain => format!("{prefix}{name}{suffix}"),
            KeyShape::Tagged => format!("{prefix}{{{name}}}{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyShape;

    #[test]
    fn a_tag_keeps_a_channel_on_one_slot() {
        assert_eq!(KeyShape::Plain.key("hf:", "b:room", ""), "hf:b:room");
        assert_eq!(KeyShape::Tagged.key("hf:", "b:room", ""), "hf:{b:room}");
        assert_eq!(
            KeyShape::Tagged.key("hf:", "b:room", ":wake"),
            "hf:{b:room}:wake"
        );
        let slot = |key: &str| {
            redis::cluster_routing::Route::with_key(key, redis::cluster_routing::SlotAddr::Master)
        };
        assert_eq!(slot("hf:{b:room}"), slot("hf:{b:room}:wake"));
        // A `}` in a name ends the tag early, but at the same place in every key of the channel.
        assert_eq!(
            slot(&KeyShape::Tagged.key("hf:", "b:a}b", "")),
            slot(&KeyShape::Tagged.key("hf:", "b:a}b", ":wake"))
        );
    }
}
