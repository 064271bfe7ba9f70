//! The recorded holds waiting on each broadcast channel of this process, so that a publish span
//! can link to the polls it wakes ("who delivered this message" in one click). Only sampled
//! holds are listed, and only while tracing is on; a hold leaves the list when its
//! [`Listed`] is dropped, however the hold ends.

use super::SpanIds;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Waiting holds by channel name: `(trace id, span id)` of each hold span.
#[derive(Default)]
pub struct Waiting {
    channels: Mutex<HashMap<Arc<str>, Vec<SpanIds>>>,
}

/// A hold's place in the list; leaving it when dropped.
#[derive(Debug)]
pub struct Listed {
    channel: Arc<str>,
    span_id: u64,
}

impl Waiting {
    /// Lists a hold span waiting on `channel`.
    pub fn list(&self, channel: Arc<str>, trace_id: u128, span_id: u64) -> Listed {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(channel.clone())
            .or_default()
            .push((trace_id, span_id));
        Listed { channel, span_id }
    }

    /// The holds waiting on `channel`, at most `max`, and how many more there were.
    pub fn on(&self, channel: &str, max: usize) -> (Vec<SpanIds>, u32) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(holds) = channels.get(channel) else {
            return (Vec::new(), 0);
        };
        let links = holds.iter().take(max).copied().collect();
        let more = holds.len().saturating_sub(max);
        (links, u32::try_from(more).unwrap_or(u32::MAX))
    }

    fn remove(&self, listed: &Listed) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holds) = channels.get_mut(&listed.channel) {
            if let Some(at) = holds.iter().position(|&(_, span)| span == listed.span_id) {
                holds.swap_remove(at);
            }
            if holds.is_empty() {
                channels.remove(&listed.channel);
            }
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(tracer) = super::tracer() {
            tracer.waiting.remove(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_found_by_channel_and_capped() {
        let waiting = Waiting::default();
        let channel: Arc<str> = Arc::from("room");
        let _first = waiting.list(channel.clone(), 1, 10);
        let second = waiting.list(channel.clone(), 1, 11);
        let _third = waiting.list(channel.clone(), 2, 12);
        assert_eq!(waiting.on("room", 2), (vec![(1, 10), (1, 11)], 1));
        assert_eq!(waiting.on("other", 2), (Vec::new(), 0));
        waiting.remove(&second);
        std::mem::forget(second);
        assert_eq!(waiting.on("room", 8).0.len(), 2);
    }
}
