//! A change counter tasks wait on. Unlike a `watch` channel, whose receivers register on one
//! of several notifiers picked at random, it wakes its listeners in the order they began to
//! wait, so that which waiting request runs first, and so a replay's every decision, is the
//! same from one run to the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(super) struct Signal {
    version: AtomicU64,
    listeners: AtomicUsize,
    notify: Notify,
}

impl Signal {
    /// Wakes every listener, if there is one.
    pub fn bump(&self) {
        if self.listeners.load(Ordering::SeqCst) > 0 {
            self.version.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_waiters();
        }
    }

    /// A listener that sees every change after this call. It holds the signal, so that a
    /// reload that adds slots never moves one from under a waiting request.
    pub fn listen(self: &Arc<Self>) -> Listener {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        Listener {
            signal: self.clone(),
            seen: self.version.load(Ordering::SeqCst),
        }
    }
}

#[derive(Debug)]
pub(super) struct Listener {
    signal: Arc<Signal>,
    seen: u64,
}

impl Listener {
    /// Returns once the signal has changed since this listener last saw it.
    pub async fn changed(&mut self) {
        loop {
            let notified = self.signal.notify.notified();
            tokio::pin!(notified);
            // Registered before the version is read: a bump in between still wakes it.
            notified.as_mut().enable();
            let now = self.signal.version.load(Ordering::SeqCst);
            if now != self.seen {
                self.seen = now;
                return;
            }
            notified.await;
        }
    }

    /// Counts every change up to now as seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.signal.version.load(Ordering::SeqCst);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.signal.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_missed_and_listeners_wake_in_order() {
        let s = Arc::new(Signal::default());
        let mut a = s.listen();
        s.bump();
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed())
            .await
            .expect("the earlier bump counts");
        let s = std::sync::Arc::new(Signal::default());
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 1..=3 {
            let (s, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let mut l = s.listen();
                l.changed().await;
                order.lock().unwrap_or_else(|e| e.into_inner()).push(n);
            }));
            // Each task begins to wait before the next is made.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        s.bump();
        for t in tasks {
            t.await.expect("the task ends");
        }
        assert_eq!(
            *order.lock().unwrap_or_else(|e| e.into_inner()),
            vec![1, 2, 3]
        );
    }
}
