//! Graceful shutdown: one signal source (SIGINT + SIGTERM) and a cloneable [`Shutdown`] that
//! servers await before they stop accepting and drain.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Fires the shutdown of everything holding a matching [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves once its trigger fires (or is dropped).
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and the first of its listeners.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Completes when shutdown has been requested.
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `drain` but gives up after `grace`, so a stuck connection cannot hold the process forever.
pub async fn bounded<F: Future>(grace: Duration, drain: F) -> Option<F::Output> {
    match tokio::time::timeout(grace, drain).await {
        Ok(output) => Some(output),
        Err(_) => {
            tracing::warn!(grace_secs = grace.as_secs(), "drain did not finish in time");
            None
        }
    }
}
