//! A background thread that runs a task at an interval until it is stopped: the log's interval
//! flusher and the background compactor.
//!
//! Invariants: dropping the handle stops the thread and waits for it, except when the drop
//! happens on that thread itself (its task held the last reference to what owns the handle);
//! a stop requested before the thread starts waiting is not missed, so a drop never waits a
//! whole interval; in a process forked from the one that started the thread, dropping the
//! handle neither locks nor joins (the thread does not exist there).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::io::ForkGuard;
use crate::util::lock;

/// The running thread, and how to stop it.
#[derive(Debug)]
pub(crate) struct Periodic {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
    fork_guard: ForkGuard,
}

impl Periodic {
    /// Runs `task` every `interval` on a thread named `name`, until the handle is dropped or
    /// `task` returns false (what it works on is gone).
    pub fn start(
        name: &str,
        interval: Duration,
        mut task: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<Periodic> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let (stopped, wake) = &*thread_stop;
                let mut guard = lock(stopped);
                while !*guard {
                    guard = wake
                        .wait_timeout(guard, interval)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if *guard {
                        return;
                    }
                    drop(guard);
                    if !task() {
                        return;
                    }
                    guard = lock(stopped);
                }
            })?;
        Ok(Periodic {
            stop,
            handle: Some(handle),
            fork_guard: ForkGuard::new(),
        })
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if self.fork_guard.is_forked() {
            // Joining would wait forever for a thread this process does not have, and the stop
            // mutex may have been held by it at the fork.
            if let Some(handle) = self.handle.take() {
                std::mem::forget(handle);
            }
            return;
        }
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(handle) = self.handle.take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}
