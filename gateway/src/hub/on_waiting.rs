//! The hook a poll's caller gives the hub to learn when the poll has its place in the channel
//! and starts to wait. From that moment a publish reaches the poll, so a transport that counts
//! held polls by it never counts one a publish could still miss (a Redis poll without a cursor,
//! say, takes its place only once its first read has fixed where it starts).

/// Called at most once per poll, and not at all when the poll is answered without waiting.
pub struct OnWaiting<'a>(Option<&'a mut (dyn FnMut() + Send)>);

impl<'a> OnWaiting<'a> {
    pub fn new(hook: &'a mut (dyn FnMut() + Send)) -> Self {
        Self(Some(hook))
    }

    /// Nobody to tell.
    pub fn nobody() -> Self {
        Self(None)
    }

    /// The poll waits from now on.
    pub(crate) fn tell(&mut self) {
        if let Some(hook) = self.0.take() {
            hook();
        }
    }
}
