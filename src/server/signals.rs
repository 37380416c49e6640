//! SIGTERM and SIGINT: the first starts a graceful shutdown, a second ends the process at once
//! (an operator who signals twice does not want to wait for the drain, nor for the flush and
//! close after it).
//!
//! Invariant: the handlers are watched by a thread of their own with its own small runtime,
//! which lives until the process exits, so a second signal is acted on whatever the server's
//! runtime is doing, including after it is gone.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;

/// Installs the handlers and returns once they are installed (from then on neither signal kills
/// the process by its default action); the receiver completes at the first signal.
pub(super) fn install() -> io::Result<oneshot::Receiver<()>> {
    let (installed_sender, installed) = std::sync::mpsc::channel::<io::Result<()>>();
    let (first_sender, first) = oneshot::channel();
    std::thread::Builder::new()
        .name("runlog-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = installed_sender.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut signals = match Signals::new() {
                    Ok(signals) => signals,
                    Err(error) => {
                        let _ = installed_sender.send(Err(error));
                        return;
                    }
                };
                let _ = installed_sender.send(Ok(()));
                signals.next().await;
                let _ = first_sender.send(());
                signals.next().await;
                exit_now();
            });
        })?;
    installed
        .recv()
        .map_err(|_| io::Error::other("the signal thread stopped before installing handlers"))??;
    Ok(first)
}

/// The handlers for SIGTERM and SIGINT.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Ends the process without draining: what was acknowledged is already in the log, as durable
/// as the store's durability level made it.
fn exit_now() {
    std::process::exit(130);
}
