//! Progress bars on a terminal (silent with --quiet or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting images, with rate and ETA.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar labelled `what` (e.g. "extract"); hidden when `quiet`.
    pub fn new(what: &str, quiet: bool) -> Self {
        let pb = ProgressBar::with_draw_target(
            None,
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} images  {rate}  ETA {eta}",
            )
            .expect("static template")
            // The mean since the start: indicatif's own {per_sec} is a smoothed estimate that
            // lags on runs of a few seconds.
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let secs = s.elapsed().as_secs_f64();
                    let _ = if secs > 0.0 && s.pos() > 0 {
                        write!(w, "{:.1}/s", s.pos() as f64 / secs)
                    } else {
                        write!(w, "-/s")
                    };
                },
            )
            .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        Self(pb)
    }

    /// Adds `n` done items.
    pub fn inc(&self, n: u64) {
        self.0.inc(n)
    }

    /// Sets the done count.
    pub fn set_position(&self, n: u64) {
        self.0.set_position(n)
    }

    /// Sets the total.
    pub fn set_len(&self, n: u64) {
        self.0.set_length(n)
    }

    /// Removes the bar.
    pub fn done(&self) {
        self.0.finish_and_clear()
    }
}

impl headstart_core::progress::Progress for Bar {
    fn start(&self, total: u64) {
        self.set_len(total)
    }
    fn advance(&self, n: u64) {
        self.inc(n)
    }
    fn finish(&self) {
        self.done()
    }
}
