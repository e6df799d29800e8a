//! Read-mostly values the side thread replaces and the workers pick up between batches.
//!
//! A worker checks one atomic generation number per loop turn (a load of a line nobody
//! writes on the fast path) and only when it changed takes the value's lock, briefly, to
//! clone the new `Arc`. The lock is therefore touched once per reload, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A value published to the workers.
#[derive(Debug)]
pub struct Published<T> {
    generation: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    /// Publishes `value` as generation 0.
    pub fn new(value: Arc<T>) -> Self {
        Published {
            generation: AtomicU64::new(0),
            value: Mutex::new(value),
        }
    }

    /// Replaces the value; workers see it at their next turn.
    pub fn publish(&self, value: Arc<T>) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = value;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Increases with every [`publish`](Self::publish).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A subscriber that has seen the current value.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber<T> {
        Subscriber {
            seen: self.generation.load(Ordering::Acquire),
            source: self.clone(),
        }
    }
}

/// One worker's view of a [`Published`] value.
#[derive(Debug)]
pub struct Subscriber<T> {
    source: Arc<Published<T>>,
    seen: u64,
}

impl<T> Subscriber<T> {
    /// The new value if it changed since the last call.
    #[inline]
    pub fn changed(&mut self) -> Option<Arc<T>> {
        let now = self.source.generation.load(Ordering::Acquire);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(self.source.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_each_new_value_once() {
        let published = Arc::new(Published::new(Arc::new(1)));
        let mut sub = published.subscribe();
        assert_eq!(sub.changed(), None);
        published.publish(Arc::new(2));
        assert_eq!(sub.changed().as_deref(), Some(&2));
        assert_eq!(sub.changed(), None);
        let thread_sub = published.subscribe();
        let handle = std::thread::spawn(move || {
            let mut sub = thread_sub;
            loop {
                if let Some(v) = sub.changed() {
                    return *v;
                }
                std::thread::yield_now();
            }
        });
        published.publish(Arc::new(3));
        assert_eq!(handle.join().unwrap(), 3);
    }
}
