//! Where each field of a YAML file stands: a map from field paths (`routes[2].upstream`) to
//! line and column, built from the parser's events. serde gives positions only for the errors it
//! raises itself; this map lets the later, semantic checks point at the line too.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (both 1-based) of every key and sequence item in one file.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    positions: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Positions of everything in `text`; a text the parser refuses yields no positions (serde
    /// will report the syntax error itself, with its own position).
    pub fn of(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        Self {
            positions: builder.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that is written in the file.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(found) = self.positions.get(path) {
                return Some(*found);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

impl Builder {
    /// The path of the node about to start, and whether the current frame expects a key.
    fn child_path(&self) -> Option<String> {
        match self.stack.last()? {
            Frame::Map {
                path,
                key: Some(key),
            } => Some(join(path, key)),
            Frame::Map { key: None, .. } => None,
            Frame::Seq { path, index } => Some(format!("{path}[{index}]")),
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions
            .entry(path.to_owned())
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// A value node finished: the enclosing map wants its next key, the sequence its next item.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn start_collection(&mut self, mark: Marker, seq: bool) {
        let path = if self.stack.is_empty() {
            String::new()
        } else {
            self.child_path().unwrap_or_default()
        };
        if !path.is_empty() {
            self.record(&path, mark);
        }
        self.stack.push(if seq {
            Frame::Seq { path, index: 0 }
        } else {
            Frame::Map { path, key: None }
        });
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::MappingStart(..) => self.start_collection(mark, false),
            Event::SequenceStart(..) => self.start_collection(mark, true),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = self.stack.last_mut()
                {
                    let full = join(path, &value);
                    *key = Some(value);
                    self.record(&full, mark);
                } else {
                    if let Some(path) = self.child_path() {
                        self.record(&path, mark);
                    }
                    self.value_done();
                }
            }
            Event::Alias(..) => self.value_done(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "listen: 1.2.3.4:80\nupstreams:\n  ai:\n    targets: [a, b]\nroutes:\n  - name: one\n    upstream: ai\n  - name: two\n    match:\n      path: /x\n";

    #[test]
    fn finds_keys_and_items() {
        let positions = Positions::of(TEXT);
        assert_eq!(positions.find("listen"), Some((1, 1)));
        assert_eq!(positions.find("upstreams.ai.targets"), Some((4, 5)));
        assert_eq!(positions.find("routes[0].upstream"), Some((7, 5)));
        assert_eq!(positions.find("routes[1].match.path"), Some((10, 7)));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let positions = Positions::of(TEXT);
        assert_eq!(positions.find("routes[1].match.methods"), Some((9, 5)));
        assert_eq!(positions.find("nowhere"), None);
    }
}
