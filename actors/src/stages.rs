//! Where a message's time goes inside the node, as histograms in `/metrics`
//! (`doppel_stage_seconds{stage}`), so that a latency tail can be attributed:
//!
//! | stage | from | to |
//! |---|---|---|
//! | `queue` | the message is decoded (or the request made) | its twin starts on it (routing, loading the twin, the twin's mailbox) |
//! | `window` | its twin handed the result to the host | the commit holding it starts |
//! | `commit` | the commit starts | it returns (also `doppel_commit_seconds`) |
//! | `total` | decoded | its effects are released (acknowledgement, replies, change events) |
//!
//! The handles are registered once, when the node starts, so recording costs no look-up.

use metrics::Histogram;
use std::time::Instant;

/// The stage histograms.
#[derive(Clone, Debug)]
pub(crate) struct Stages {
    pub queue: Histogram,
    pub window: Histogram,
    pub commit: Histogram,
    pub total: Histogram,
}

impl Stages {
    /// Registers the histograms with the process's recorder (none installed: they record
    /// nothing).
    pub fn register() -> Self {
        let stage =
            |name: &'static str| metrics::histogram!("doppel_stage_seconds", "stage" => name);
        Self {
            queue: stage("queue"),
            window: stage("window"),
            commit: stage("commit"),
            total: stage("total"),
        }
    }
}

/// Records the time since `since` into `histogram`.
pub(crate) fn since(histogram: &Histogram, since: Instant) {
    histogram.record(since.elapsed().as_secs_f64());
}
