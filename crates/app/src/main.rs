//! `app`: the gcsfs demo HTTP service. Configuration from the environment (`PORT`, `FOLDER`,
//! `MNT_DIR`, `RUST_LOG`); JSON log lines on stdout; exits 0 after a graceful shutdown on SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use app::Config;
use app::logging::CloudLogging;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .event_format(CloudLogging)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "app failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading the configuration")?;
    // Handlers are installed before serving, so a signal that arrives early is not lost.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "{name} received, finishing requests in flight"
        );
    };

    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(
        %addr,
        folder = %config.folder.display(),
        "listening on {addr}, files go to {}",
        config.folder.display()
    );
    app::serve(listener, config.folder, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}
