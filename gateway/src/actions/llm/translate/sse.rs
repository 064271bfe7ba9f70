//! Server-sent events (the WHATWG `text/event-stream` format) as both providers stream them:
//! bytes in, whole events out, whatever the bytes were split into on the way.

use super::fields::invalid;
use super::TranslateError;

/// One dispatched event: its `event:` name if any, and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SseEvent {
    pub name: Option<String>,
    pub data: String,
}

/// Reads events from a byte stream fed piece by piece. Lines end in `\r\n`, `\n` or `\r`;
/// since those are ASCII, a line never ends inside a UTF-8 sequence, so a line is decoded only
/// once whole and a sequence split between pieces is never seen split.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last line ended in `\r`: a `\n` opening the next piece ends nothing.
    after_carriage_return: bool,
    /// Some line was read: a byte order mark may open only the first.
    read_a_line: bool,
    name: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// The events this piece completes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, TranslateError> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_carriage_return {
            if let Some(after) = rest.strip_prefix(b"\n") {
                rest = after;
            }
            if !bytes.is_empty() {
                self.after_carriage_return = false;
            }
        }
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.line_ended(&line, &mut events)?;
            let ended_by_carriage_return = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if ended_by_carriage_return {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_carriage_return = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        Ok(events)
    }

    /// The stream ended: the event it was in the middle of, if any. The standard drops an event
    /// left unfinished, but a provider that forgets the last blank line still said it all.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        // A last line without its ending is read if it decodes: one cut short inside a JSON
        // value fails to parse where it is translated, and is dropped there.
        if !line.is_empty() && std::str::from_utf8(&line).is_ok() {
            let _ = self.line_ended(&line, &mut events);
        }
        let _ = self.line_ended(b"", &mut events);
        events
    }

    fn line_ended(
        &mut self,
        line: &[u8],
        events: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        let mut line = std::str::from_utf8(line)
            .map_err(|_| invalid("stream", "the provider's event stream is not UTF-8"))?;
        if !self.read_a_line {
            self.read_a_line = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            let name = self.name.take();
            if let Some(data) = self.data.take() {
                events.push(SseEvent { name, data });
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id` and `retry` matter to a browser reconnecting, not to a translation.
            _ => {}
        }
        Ok(())
    }
}

/// The events of a whole, well-formed stream: each one's `event:` name and its data.
pub fn read_events(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let mut parser = SseParser::default();
    let mut events = parser.feed(bytes).unwrap_or_default();
    events.extend(parser.finish());
    events
        .into_iter()
        .map(|event| (event.name, event.data))
        .collect()
}

/// Appends one event, `event:` line first if named, then its data one `data:` line per line.
pub(super) fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            name: name.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn whole(bytes: &[u8]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = parser.feed(bytes).unwrap();
        events.extend(parser.finish());
        events
    }

    fn byte_by_byte(bytes: &[u8]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for byte in bytes {
            events.extend(parser.feed(std::slice::from_ref(byte)).unwrap());
        }
        events.extend(parser.finish());
        events
    }

    #[test]
    fn every_line_ending_and_split_reads_the_same() {
        let text = "event: message_start\ndata: {\"a\":\"é€😀\"}\n\n: keep-alive\n\ndata: one\ndata:two\n\n";
        let expected = vec![
            event(Some("message_start"), "{\"a\":\"é€😀\"}"),
            event(None, "one\ntwo"),
        ];
        for ending in ["\n", "\r\n", "\r"] {
            let bytes = text.replace('\n', ending).into_bytes();
            assert_eq!(whole(&bytes), expected, "{ending:?}");
            assert_eq!(byte_by_byte(&bytes), expected, "{ending:?}");
            for split in 0..bytes.len() {
                let mut parser = SseParser::default();
                let mut events = parser.feed(&bytes[..split]).unwrap();
                events.extend(parser.feed(&bytes[split..]).unwrap());
                events.extend(parser.finish());
                assert_eq!(events, expected, "{ending:?} split at {split}");
            }
        }
    }

    #[test]
    fn an_event_is_dispatched_at_its_blank_line_not_before() {
        let mut parser = SseParser::default();
        assert_eq!(parser.feed(b"data: [DONE]\n").unwrap(), vec![]);
        assert_eq!(parser.feed(b"\n").unwrap(), vec![event(None, "[DONE]")]);
    }

    #[test]
    fn events_without_data_and_unknown_fields_are_ignored() {
        assert_eq!(
            whole(b"event: ping\n\nid: 7\nretry: 10\ndata\n\nfoo: bar\ndata: x\n\n"),
            vec![event(None, ""), event(None, "x")]
        );
    }

    #[test]
    fn a_byte_order_mark_opens_the_stream_unseen() {
        assert_eq!(
            whole("\u{feff}data: x\n\n".as_bytes()),
            vec![event(None, "x")]
        );
    }

    #[test]
    fn the_last_event_may_lack_its_blank_line() {
        assert_eq!(whole(b"data: [DONE]\n"), vec![event(None, "[DONE]")]);
        assert_eq!(whole(b"data: [DONE]"), vec![event(None, "[DONE]")]);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_invalid() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.feed(b"data: \xff\xfe\n"),
            Err(invalid(
                "stream",
                "the provider's event stream is not UTF-8"
            ))
        );
    }

    #[test]
    fn written_events_read_back() {
        let mut out = Vec::new();
        write_event(
            &mut out,
            Some("message_stop"),
            "{\"type\":\"message_stop\"}",
        );
        write_event(&mut out, None, "a\nb");
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\ndata: a\ndata: b\n\n"
        );
        assert_eq!(
            whole(&out),
            vec![
                event(Some("message_stop"), "{\"type\":\"message_stop\"}"),
                event(None, "a\nb")
            ]
        );
    }
}
