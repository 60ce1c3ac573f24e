//! A bounded multi-producer, single-consumer queue for a connection's outgoing packets and
//! pending acknowledgements.
//!
//! Like `tokio::sync::mpsc`, but it allocates nothing until something is queued and gives its
//! memory back when drained: tokio's channel allocates a block of 32 slots up front, about 2 KB
//! per queue and connection, which was a fifth of an idle plain connection's footprint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Slots kept allocated when the queue drains (more is given back).
const KEEP: usize = 4;

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_open: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Something was queued, or the last sender left.
    readable: Notify,
    /// A slot freed up, or the receiver left.
    writable: Notify,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here panics while holding the lock; a poisoned lock still holds a valid queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// A queue of at most `capacity` items (at least one).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_open: true,
        }),
        capacity: capacity.max(1),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut s = self.inner.lock();
            if !s.receiver_open {
                return Err(TrySendError::Closed(item));
            }
            if s.items.len() >= self.inner.capacity {
                return Err(TrySendError::Full(item));
            }
            s.items.push_back(item);
        }
        self.inner.readable.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room; gives it back when the receiver is gone.
    pub async fn send(&self, mut item: T) -> Result<(), T> {
        loop {
            let writable = self.inner.writable.notified();
            tokio::pin!(writable);
            // Registered before the check, so a slot freed in between still wakes us.
            writable.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(back),
                Err(TrySendError::Full(back)) => item = back,
            }
            writable.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut s = self.inner.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.inner.readable.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        let inner = &*self.inner;
        loop {
            let readable = inner.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            {
                let s = inner.lock();
                if s.items.is_empty() && s.senders == 0 {
                    return None;
                }
            }
            if let Some(item) = self.pop() {
                return Some(item);
            }
            readable.await;
        }
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        self.pop()
    }

    fn pop(&self) -> Option<T> {
        let item = {
            let mut s = self.inner.lock();
            let item = s.items.pop_front()?;
            if s.items.is_empty() && s.items.capacity() > KEEP {
                s.items = VecDeque::new();
            }
            item
        };
        self.inner.writable.notify_one();
        Some(item)
    }

    /// Refuses further items; those queued can still be received.
    pub fn close(&mut self) {
        self.inner.lock().receiver_open = false;
        self.inner.writable.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_and_none_after_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let tx2 = tx.clone();
        tx.send(1).await.unwrap();
        tx2.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx2.send(3).await.unwrap();
        drop(tx2);
        assert_eq!(waiting.await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn a_full_queue_pushes_back_until_the_receiver_takes_one() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        let sender = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "waits for room");
        assert_eq!(rx.recv().await, Some(1));
        let tx = sender.await.unwrap();
        assert_eq!((rx.try_recv(), rx.try_recv()), (Some(2), Some(3)));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_closed_receiver_refuses_and_wakes_a_waiting_sender() {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let sender = tokio::spawn(async move { tx.send(2).await });
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(sender.await.unwrap(), Err(2));
        assert_eq!(rx.try_recv(), Some(1), "what was queued stays receivable");
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = channel(1000);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.inner.lock().items.capacity() <= KEEP);
    }
}
