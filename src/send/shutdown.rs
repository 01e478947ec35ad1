//! How a command is stopped: the two stages of a shutdown, and the signals that start one.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// The two shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Start nothing new; let requests on the wire finish.
    pub stop: CancellationToken,
    /// Abandon requests on the wire.
    pub abort: CancellationToken,
    /// The first signal that stopped the command, when one did.
    signal: Arc<std::sync::OnceLock<Signal>>,
}

impl Shutdown {
    /// Records the first signal received (later ones do not replace it).
    pub fn signalled_by(&self, signal: Signal) {
        let _ = self.signal.set(signal);
    }

    /// The first signal that stopped the command, if a signal did.
    pub fn signal(&self) -> Option<Signal> {
        self.signal.get().copied()
    }

    /// Why the command stopped, as recorded with the run: the signal's name, or Ctrl-C when
    /// no signal was recorded (the stop token was cancelled directly).
    pub fn stopped_by(&self) -> &'static str {
        match self.signal() {
            Some(Signal::Terminate) => "stopped by SIGTERM",
            Some(Signal::HangUp) => "stopped by SIGHUP",
            Some(Signal::Interrupt) | None => "stopped by Ctrl-C",
        }
    }
}

/// The signals that stop a command as Ctrl-C does: Ctrl-C itself, and what `docker stop`,
/// systemd, `timeout` and a closed terminal send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP.
    HangUp,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "Ctrl-C",
            Self::Terminate => "SIGTERM",
            Self::HangUp => "SIGHUP",
        }
    }
}
