//! `gcsfs run`: a container entrypoint. Mounts the bucket, starts COMMAND in its own process
//! group with `MNT_DIR` set, forwards signals to it, reaps orphaned zombies when it is PID 1, and
//! once COMMAND has exited (by itself, or after SIGTERM/SIGINT, killed if it overstays
//! `--child-stop-timeout`) uploads every dirty file within what is left of `--drain-timeout`,
//! unmounts, and exits with COMMAND's status.
//!
//! The child's status is collected with `waitpid` on SIGCHLD, by pid, by this module alone: as
//! PID 1 it waits for any child (`-1`) so that orphans re-parented to it are reaped too, and
//! recognises its own child by pid. Nothing else in the process waits for children while the
//! command runs (the std `Child` handle is dropped unused), so no status is stolen. Signals that
//! arrive after the child was reaped are not forwarded (its pid may already be reused).

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt as _;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::RunCommand;
use crate::daemon::{self, ServeError};
use crate::mount::Mounted;

/// The signals forwarded to COMMAND. SIGTERM and SIGINT also start the shutdown.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long the mount may take to answer its first request after mounting.
const MOUNT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `gcsfs run` could not do its job (COMMAND's own failures are its exit status instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bucket could not be opened or mounted; COMMAND was not started.
    #[error(transparent)]
    Mount(#[from] ServeError),
    /// The mount was made but does not answer.
    #[error("the mount at {path} does not answer")]
    NoAnswer {
        /// The mount point.
        path: PathBuf,
        /// Why (`TimedOut` if it did not answer in time).
        #[source]
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("installing the {name} handler")]
    Signal {
        /// The signal's name.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// COMMAND could not be started (the bucket was unmounted again).
    #[error("cannot start {command:?}")]
    Spawn {
        /// The program given.
        command: OsString,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How COMMAND ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this status.
    Exited(i32),
    /// It died of this signal.
    Signaled(Signal),
}

impl ChildExit {
    /// The shell's convention: the exit status, or 128 + the signal's number.
    pub fn code(self) -> u8 {
        match self {
            ChildExit::Exited(code) => (code & 0xff) as u8,
            ChildExit::Signaled(sig) => 128u8.saturating_add(sig as i32 as u8),
        }
    }
}

/// What happened, start to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// How COMMAND ended; `None` if a stop signal came before it was started.
    pub child: Option<ChildExit>,
    /// The signal that stopped `gcsfs run` before COMMAND was started, if any.
    pub stopped_before_start: Option<Signal>,
    /// How many dirty files could not be uploaded before unmounting (each was logged).
    pub not_uploaded: usize,
}

impl RunOutcome {
    /// The exit status of `gcsfs run`: COMMAND's (128 + signal if it died of one); 128 + the
    /// signal if stopped before COMMAND started; and never 0 when a file was not uploaded (1
    /// then, if it would otherwise be 0).
    pub fn exit_code(&self) -> u8 {
        let code = match (self.child, self.stopped_before_start) {
            (Some(exit), _) => exit.code(),
            (None, Some(sig)) => 128u8.saturating_add(sig as i32 as u8),
            (None, None) => 1,
        };
        if code == 0 && self.not_uploaded > 0 {
            1
        } else {
            code
        }
    }
}

/// `gcsfs run`, on a running tokio runtime.
pub async fn run(cmd: &RunCommand) -> Result<RunOutcome, RunError> {
    let is_pid1 = nix::unistd::getpid().as_raw() == 1;
    // Handlers first: a signal that arrives while mounting is neither lost nor fatal.
    let mut signals = forward_signals()?;
    let mut sigchld = signal(SignalKind::child()).map_err(|source| RunError::Signal {
        name: "SIGCHLD",
        source,
    })?;

    // Mounting runs as a task of its own, so that a stop signal meanwhile can let it finish
    // and take the mount down again rather than abandon it half made.
    let mut opening = tokio::spawn({
        let (store, mount) = (cmd.store.clone(), cmd.mount.clone());
        async move { daemon::open_and_mount(&store, &mount).await }
    });
    let mounted = tokio::select! {
        biased;
        mounted = &mut opening => mounted.map_err(|e| daemon::ServeError::Join(e.to_string()))??,
        sig = next_stop(&mut signals) => {
            tracing::warn!(signal = sig.as_str(), "{sig} before the mount was ready; not starting the command");
            let deadline = Instant::now() + cmd.drain_timeout();
            // Let the mount finish, so that it can be taken down again, but only until the
            // deadline: the bucket check can take up to --retry-deadline-secs.
            match tokio::time::timeout_at(deadline, &mut opening).await {
                Ok(Ok(Ok(mounted))) => {
                    mounted.shutdown(deadline).await;
                }
                Ok(_) => {}
                Err(_) => {
                    opening.abort();
                    tracing::warn!(
                        "the mount was not ready by the drain deadline; exiting without it \
                         (a mount made meanwhile is left dead; the next mount there removes it)"
                    );
                }
            }
            return Ok(RunOutcome { child: None, stopped_before_start: Some(sig), not_uploaded: 0 });
        }
    };
    if let Err(source) = wait_until_answers(mounted.mountpoint()).await {
        let path = mounted.mountpoint().to_path_buf();
        mounted.shutdown(Instant::now() + cmd.drain_timeout()).await;
        return Err(RunError::NoAnswer { path, source });
    }
    // A stop signal that came during the last steps of mounting: the command is not started.
    if let Some(sig) = pending_stop(&mut signals) {
        tracing::warn!(
            signal = sig.as_str(),
            "{sig} before the command started; unmounting"
        );
        let failures = mounted.shutdown(Instant::now() + cmd.drain_timeout()).await;
        return Ok(RunOutcome {
            child: None,
            stopped_before_start: Some(sig),
            not_uploaded: failures.len(),
        });
    }

    let child = match spawn(&cmd.command, mounted.mountpoint()) {
        Ok(pid) => pid,
        Err(source) => {
            mounted.shutdown(Instant::now() + cmd.drain_timeout()).await;
            return Err(RunError::Spawn {
                command: cmd.command[0].clone(),
                source,
            });
        }
    };
    tracing::info!(pid = child.as_raw(), pid1 = is_pid1, command = ?cmd.command, "started the command");

    let supervisor = Supervisor {
        child,
        is_pid1,
        child_stop_timeout: cmd.child_stop_timeout(),
        drain_timeout: cmd.drain_timeout(),
    };
    let (exit, drain_deadline) = supervisor.wait(&mut signals, &mut sigchld).await;
    Ok(finish(mounted, exit, drain_deadline).await)
}

/// Drains and unmounts by `deadline` (a mount still busy then is detached), and logs the
/// result.
async fn finish(mounted: Mounted, exit: ChildExit, deadline: Instant) -> RunOutcome {
    let remaining = deadline.saturating_duration_since(Instant::now());
    tracing::info!(
        remaining_ms = remaining.as_millis() as u64,
        "uploading dirty files and unmounting"
    );
    let not_uploaded = mounted.shutdown(deadline).await.len();
    let outcome = RunOutcome {
        child: Some(exit),
        stopped_before_start: None,
        not_uploaded,
    };
    if outcome.not_uploaded > 0 {
        tracing::error!(
            count = outcome.not_uploaded,
            exit_code = outcome.exit_code(),
            "{} file(s) could not be uploaded before unmounting (each is logged above)",
            outcome.not_uploaded
        );
    } else {
        tracing::info!(
            exit_code = outcome.exit_code(),
            "all files uploaded; exiting"
        );
    }
    outcome
}

/// Watches over the running command.
#[derive(Debug)]
struct Supervisor {
    child: Pid,
    is_pid1: bool,
    child_stop_timeout: Duration,
    drain_timeout: Duration,
}

impl Supervisor {
    /// Forwards signals and reaps until the command has exited; kills its process group if it
    /// overstays the stop timeout after SIGTERM/SIGINT. Returns how it ended and the deadline of
    /// the drain that follows.
    async fn wait(
        &self,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        sigchld: &mut tokio::signal::unix::Signal,
    ) -> (ChildExit, Instant) {
        // Set by the first SIGTERM/SIGINT: when to kill the group, when everything must be done.
        let mut stop: Option<(Instant, Instant)> = None;
        let mut killed = false;
        // The command may have exited before the SIGCHLD handler saw it; look once first.
        let mut exit = self.reap();
        while exit.is_none() {
            let kill_at = stop.map(|(kill_at, _)| kill_at);
            tokio::select! {
                _ = sigchld.recv() => exit = self.reap(),
                Some(sig) = signals.recv() => {
                    self.forward(sig);
                    if stop.is_none() && matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                        let now = Instant::now();
                        stop = Some((now + self.child_stop_timeout, now + self.drain_timeout));
                    }
                }
                _ = sleep_until_opt(kill_at), if !killed && kill_at.is_some() => {
                    killed = true;
                    tracing::warn!(
                        pid = self.child.as_raw(),
                        timeout_ms = self.child_stop_timeout.as_millis() as u64,
                        "the command did not exit in time; killing its process group"
                    );
                    if let Err(e) = killpg(self.child, Signal::SIGKILL) {
                        tracing::warn!(error = %e, "killing the command's process group");
                    }
                }
                // Killed and still not gone (stuck in the kernel): stop waiting at the deadline,
                // so that the drain and the unmount still happen before an outside SIGKILL.
                _ = sleep_until_opt(stop.map(|(_, deadline)| deadline)), if killed => {
                    tracing::error!(
                        pid = self.child.as_raw(),
                        "the command was killed but has not exited; going on without it"
                    );
                    exit = Some(ChildExit::Signaled(Signal::SIGKILL));
                }
            }
        }
        let exit = exit.expect("loop ends with an exit");
        match exit {
            ChildExit::Exited(code) => {
                tracing::info!(code, "the command exited with status {code}")
            }
            ChildExit::Signaled(sig) => {
                tracing::info!(signal = sig.as_str(), "the command died of {sig}")
            }
        }
        // What is left of its process group would keep writing during the drain or hold the
        // mount busy; it gets what the kernel gives a container's processes when PID 1 exits.
        if killpg(self.child, Signal::SIGKILL).is_ok() {
            tracing::info!(
                pgid = self.child.as_raw(),
                "killed the processes left in the command's process group"
            );
        }
        if self.is_pid1 {
            self.reap();
        }
        let deadline = match stop {
            Some((_, deadline)) => deadline,
            None => Instant::now() + self.drain_timeout,
        };
        (exit, deadline)
    }

    /// Collects every status that is ready: as PID 1 any child's (orphans are reaped and
    /// dropped), otherwise only the command's. Returns the command's exit if it was among them.
    fn reap(&self) -> Option<ChildExit> {
        let which = if self.is_pid1 { None } else { Some(self.child) };
        let mut found = None;
        loop {
            match waitpid(which, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.child => {
                    found = Some(ChildExit::Exited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.child => {
                    found = Some(ChildExit::Signaled(sig));
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return found,
                Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                    tracing::debug!(pid = pid.as_raw(), "reaped an orphaned process");
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return found;
                }
            }
            if found.is_some() && !self.is_pid1 {
                return found;
            }
        }
    }

    /// Sends `sig` to the command (not yet reaped, so its pid is still its own).
    fn forward(&self, sig: Signal) {
        tracing::info!(
            signal = sig.as_str(),
            pid = self.child.as_raw(),
            "forwarding {sig} to the command"
        );
        if let Err(e) = kill(self.child, sig) {
            tracing::debug!(signal = sig.as_str(), error = %e, "forwarding a signal");
        }
    }
}

/// Sleeps until `at`, or forever if `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One task per forwarded signal, all feeding one channel, in arrival order.
fn forward_signals() -> Result<mpsc::UnboundedReceiver<Signal>, RunError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for sig in FORWARDED {
        let mut stream =
            signal(SignalKind::from_raw(sig as i32)).map_err(|source| RunError::Signal {
                name: sig.as_str(),
                source,
            })?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

/// Waits for the next SIGTERM/SIGINT (other signals are dropped: there is no child yet).
async fn next_stop(signals: &mut mpsc::UnboundedReceiver<Signal>) -> Signal {
    loop {
        match signals.recv().await {
            Some(sig @ (Signal::SIGTERM | Signal::SIGINT)) => return sig,
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

/// A SIGTERM/SIGINT already received, if any (without waiting).
fn pending_stop(signals: &mut mpsc::UnboundedReceiver<Signal>) -> Option<Signal> {
    next_stop(signals).now_or_never()
}

/// Stats the mount point until the filesystem answers (bounded by [`MOUNT_ANSWER_TIMEOUT`]).
async fn wait_until_answers(mountpoint: &Path) -> std::io::Result<()> {
    let path = mountpoint.to_path_buf();
    let stat = tokio::task::spawn_blocking(move || std::fs::metadata(&path).map(|_| ()));
    match tokio::time::timeout(MOUNT_ANSWER_TIMEOUT, stat).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join.to_string())),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Starts `command` in its own process group with `MNT_DIR` set to the (absolute) mount point.
/// Only the pid is kept: the status is collected by [`Supervisor::reap`].
fn spawn(command: &[OsString], mountpoint: &Path) -> std::io::Result<Pid> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mnt_dir = std::path::absolute(mountpoint)?;
    let child = std::process::Command::new(program)
        .args(args)
        .env("MNT_DIR", mnt_dir)
        .process_group(0)
        .spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ChildExit::Exited(0).code(), 0);
        assert_eq!(ChildExit::Exited(42).code(), 42);
        assert_eq!(ChildExit::Signaled(Signal::SIGTERM).code(), 143);
        assert_eq!(ChildExit::Signaled(Signal::SIGKILL).code(), 137);
    }

    #[test]
    fn a_file_not_uploaded_makes_a_clean_exit_non_zero_and_keeps_other_codes() {
        let outcome = |child, not_uploaded| RunOutcome {
            child: Some(child),
            stopped_before_start: None,
            not_uploaded,
        };
        assert_eq!(outcome(ChildExit::Exited(0), 0).exit_code(), 0);
        assert_eq!(outcome(ChildExit::Exited(0), 3).exit_code(), 1);
        assert_eq!(outcome(ChildExit::Exited(7), 3).exit_code(), 7);
        let killed = outcome(ChildExit::Signaled(Signal::SIGKILL), 1);
        assert_eq!(killed.exit_code(), 137);
        let early = RunOutcome {
            child: None,
            stopped_before_start: Some(Signal::SIGTERM),
            not_uploaded: 0,
        };
        assert_eq!(early.exit_code(), 143);
    }
}
