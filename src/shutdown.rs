//! Process shutdown on a signal, shared by every binary of the workspace: Ctrl-C
//! or SIGTERM cancels the token that every server and worker listens on.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on Ctrl-C or SIGTERM; returns without a word when `shutdown`
/// is cancelled otherwise (the process is done), so its owner can wait for it.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = signalled() => {
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    }
}

/// Returns on Ctrl-C or SIGTERM (only Ctrl-C where SIGTERM cannot be listened for).
async fn signalled() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
