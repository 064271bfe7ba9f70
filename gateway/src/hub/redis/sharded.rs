//! The cluster's sharded wake-ups, from the hub's side: subscribing to a channel's shard channel
//! before its first held poll reads, subscribing again when a slot move drops it, waking a
//! channel whose subscription the client renewed, and unsubscribing channels nobody waits on.
//! (`subscriber.rs` relays what arrives.) On one Redis or Sentinel none of this runs.

use super::{Local, RedisHub, HEALTH_EVERY, RESUBSCRIBE_ATTEMPTS};
use crate::hub::{ChannelKey, HubError};
use std::sync::Arc;

impl RedisHub {
    /// In a cluster, subscribes this instance to the channel's shard channel before its first
    /// read, so that no publish after that read goes unheard.
    pub(super) async fn subscribe(&self, key: &ChannelKey, local: &Local) -> Result<(), HubError> {
        let Some(subscriptions) = &self.shard_subscriptions else {
            return Ok(());
        };
        let channel = self.keys.shard_channel(key);
        local
            .subscribed
            .get_or_try_init(|| async {
                let mut subscriptions = subscriptions.clone();
                self.call(subscriptions.ssubscribe(channel)).await
            })
            .await
            .map(drop)
    }

    /// Subscribes again to a shard channel the server dropped (its slot moved to another
    /// master) when polls still wait on it, and wakes them: a wake-up may have been missed.
    pub(super) fn resubscribe(self: &Arc<Self>, shard_channel: &[u8]) {
        let Some(key) = self.keys.channel_of(shard_channel) else {
            return;
        };
        let (Some(local), Some(subscriptions)) = (self.local.get(&key), &self.shard_subscriptions)
        else {
            return;
        };
        let mut subscriptions = subscriptions.clone();
        let channel = self.keys.shard_channel(&key);
        let hub = self.clone();
        self.runtime.spawn(async move {
            // The slot's new master may not be known yet (mid-migration, mid-failover): try
            // again while polls still wait on the channel.
            let mut attempts = 0;
            while let Err(error) = hub.call(subscriptions.ssubscribe(channel.clone())).await {
                attempts += 1;
                if attempts == RESUBSCRIBE_ATTEMPTS || Arc::strong_count(&local) <= 2 {
                    tracing::warn!(channel = %key.name, %error, "could not subscribe again to a moved shard channel");
                    break;
                }
                tokio::time::sleep(HEALTH_EVERY).await;
            }
            hub.wake_local(&key, &local);
        });
    }

    /// A (re)subscription the server confirmed: after a reconnect or a topology change the
    /// client subscribes again by itself, and what was published meanwhile woke nobody here.
    pub(super) fn resubscribed(self: &Arc<Self>, shard_channel: &[u8]) {
        let Some(key) = self.keys.channel_of(shard_channel) else {
            return;
        };
        if let Some(local) = self.local.get(&key) {
            if local.subscribed.initialized() {
                self.wake_local(&key, &local);
            }
        }
    }

    /// Drops the subscriptions of channels the sweep forgot.
    pub(super) fn unsubscribe(&self, gone: Vec<String>) {
        let (Some(subscriptions), false) = (&self.shard_subscriptions, gone.is_empty()) else {
            return;
        };
        let mut subscriptions = subscriptions.clone();
        self.runtime.spawn(async move {
            // A poll that came meanwhile subscribed again; the listener sees this
            // unsubscription confirmed and subscribes that channel once more.
            let _ = subscriptions.sunsubscribe(gone).await;
        });
    }
}
