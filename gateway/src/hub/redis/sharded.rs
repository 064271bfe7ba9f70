//! The cluster's sharded wake-ups, from the hub's side: subscribing to a channel's shard channel
//! before its first held poll reads, subscribing again when a slot move drops it, waking a
//! channel whose subscription the client renewed, and unsubscribing channels nobody waits on.
//! (`subscriber.rs` relays what arrives.) On one Redis or Sentinel none of this runs.

use super::{Local, RedisHub, HEALTH_EVERY, RESUBSCRIBE_ATTEMPTS};
use crate::hub::{ChannelKey, HubError};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl RedisHub {
    /// In a cluster, subscribes this instance to the channel's shard channel before its first
    /// read, so that no publish after that read goes unheard. (Two first polls may both
    /// subscribe: Redis takes a subscription twice as once.)
    pub(super) async fn subscribe(&self, key: &ChannelKey, local: &Local) -> Result<(), HubError> {
        let Some(subscriptions) = &self.shard_subscriptions else {
            return Ok(());
        };
        if local.subscribed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut subscriptions = subscriptions.clone();
        self.call(subscriptions.ssubscribe(self.keys.shard_channel(key)))
            .await?;
        local.subscribed.store(true, Ordering::Release);
        Ok(())
    }

    /// Subscribes again to a shard channel the server dropped (its slot moved to another
    /// master) when polls still wait on it, and wakes them: a wake-up may have been missed.
    pub(super) fn resubscribe(self: &Arc<Self>, shard_channel: &[u8]) {
        let Some(key) = self.keys.channel_of(shard_channel) else {
            return;
        };
        if let Some(local) = self.local.get(&key) {
            local.subscribed.store(false, Ordering::Release);
            self.subscribe_again(key, local);
        }
    }

    /// After the backplane comes back: channels whose subscription was lost are subscribed
    /// again (the client renews the others by itself).
    pub(super) fn subscribe_lost(self: &Arc<Self>) {
        if self.shard_subscriptions.is_none() {
            return;
        }
        for (key, local) in self.local.all() {
            if !local.subscribed.load(Ordering::Acquire) {
                self.subscribe_again(key, local);
            }
        }
    }

    fn subscribe_again(self: &Arc<Self>, key: ChannelKey, local: Arc<Local>) {
        let Some(subscriptions) = &self.shard_subscriptions else {
            return;
        };
        let mut subscriptions = subscriptions.clone();
        let channel = self.keys.shard_channel(&key);
        let hub = self.clone();
        self.runtime.spawn(async move {
            // The slot's new master may not be known yet (mid-migration, mid-failover): try
            // again while polls still wait on the channel. Given up, the channel's next poll
            // subscribes, and so does the backplane's next recovery.
            let mut attempts = 0;
            loop {
                match hub.call(subscriptions.ssubscribe(channel.clone())).await {
                    Ok(()) => {
                        local.subscribed.store(true, Ordering::Release);
                        break;
                    }
                    Err(error) => {
                        attempts += 1;
                        if attempts == RESUBSCRIBE_ATTEMPTS || Arc::strong_count(&local) <= 2 {
                            tracing::warn!(channel = %key.name, %error, "could not subscribe again to a moved shard channel");
                            break;
                        }
                    }
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
            if local.subscribed.load(Ordering::Acquire) {
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
            // One by one: shard channels of different slots in one SUNSUBSCRIBE are refused
            // (CROSSSLOT). A poll that came meanwhile subscribed again; the listener sees this
            // unsubscription confirmed and subscribes that channel once more.
            for channel in gone {
                if let Err(error) = subscriptions.sunsubscribe(&channel).await {
                    tracing::debug!(%channel, %error, "could not unsubscribe a swept shard channel");
                }
            }
        });
    }
}
