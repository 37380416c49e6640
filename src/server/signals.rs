//! SIGTERM and SIGINT: the first starts a graceful shutdown, a second ends the process at once
//! (an operator who signals twice does not want to wait for the drain).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The handlers for SIGTERM and SIGINT, installed (from then on neither signal kills the
/// process by its default action).
pub(super) struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    /// Installs the handlers; needs a tokio runtime.
    pub(super) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes at the first signal, and leaves a task behind that exits the process at the
    /// next one.
    pub(super) async fn first(mut self) {
        self.next().await;
        tokio::spawn(async move {
            self.next().await;
            crate::server::signals::exit_now();
        });
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
