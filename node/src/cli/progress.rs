//! Progress for long operations, on stderr: a live line on a terminal, a line every few seconds
//! otherwise, nothing for operations that finish quickly.

use crate::config::units::format_size;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Reports bytes done out of a known total.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: u64,
    start: Instant,
    last: Instant,
    tty: bool,
    printed: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64, quiet: bool) -> Self {
        let now = Instant::now();
        Self {
            label,
            total,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
            printed: false,
            quiet,
        }
    }

    /// Sets the total once it is known.
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// Records that `done` bytes are finished.
    pub fn update(&mut self, done: u64) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        if now.duration_since(self.last) < every {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-9);
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let line = format!(
            "{}: {} / {} ({pct:.0}%), {:.0} MB/s",
            self.label,
            format_size(done),
            format_size(self.total),
            done as f64 / secs / 1e6
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.printed = true;
    }

    /// Ends the live line, if one was drawn.
    pub fn finish(&mut self) {
        if self.printed && self.tty {
            let _ = writeln!(std::io::stderr());
        }
        self.printed = false;
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}
