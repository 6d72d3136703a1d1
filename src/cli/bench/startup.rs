//! Start-up and idle memory of `clientele serve`, the last part of `bench store`.
//!
//! Each run initialises a fresh data folder, starts the real binary as a child (as an operator
//! would), times it to the "serving on" line and to the first 200 from `/healthz`, leaves it
//! idle, reads its resident memory and stops it with SIGTERM. Medians over the runs are
//! reported, so one slow start (a cold page cache) does not decide the figure.

use std::path::Path;
use std::time::Duration;

use super::{CliError, Launcher, Server, median, millis, progress, resident_kib};

#[derive(Debug)]
pub(super) struct StartupRun {
    /// Spawn to the "serving on" line.
    listening: Duration,
    /// Spawn to the first 200 from `/healthz`.
    healthy: Duration,
    /// Resident memory after the idle wait.
    pub(super) idle_rss_kib: u64,
    /// SIGTERM to exit.
    stop: Duration,
}

#[derive(Debug)]
pub(super) struct StartupFigures {
    pub(super) runs: Vec<StartupRun>,
}

impl StartupFigures {
    pub(super) fn healthy_ms(&self) -> Vec<f64> {
        self.runs.iter().map(|r| millis(r.healthy)).collect()
    }

    pub(super) fn listening_ms(&self) -> Vec<f64> {
        self.runs.iter().map(|r| millis(r.listening)).collect()
    }

    pub(super) fn stop_ms(&self) -> Vec<f64> {
        self.runs.iter().map(|r| millis(r.stop)).collect()
    }

    fn rss_kib(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.idle_rss_kib as f64).collect()
    }

    pub(super) fn rss_mb_median(&self) -> f64 {
        median(&self.rss_kib()) * 1024.0 / 1_000_000.0
    }
}

/// `runs` start-ups, each on its own fresh data folder under `root`, left `idle` before the
/// memory is read.
pub(super) fn measure_startups(
    root: &Path,
    runs: u64,
    idle: Duration,
) -> Result<StartupFigures, CliError> {
    let launcher = Launcher::new(root)?;
    let mut figures = Vec::new();
    for run in 1..=runs {
        let data_dir = root.join(format!("serve-{run}"));
        launcher.init(&data_dir)?;
        progress(&format!(
            "start-up {run} of {runs}: `clientele serve` to a 200 from /healthz, then {}s idle",
            idle.as_secs()
        ));
        figures.push(measure_startup(&launcher, &data_dir, idle)?);
    }
    Ok(StartupFigures { runs: figures })
}

fn measure_startup(
    launcher: &Launcher,
    data_dir: &Path,
    idle: Duration,
) -> Result<StartupRun, CliError> {
    let mut server = Server::start(launcher, data_dir, &[])?;
    std::thread::sleep(idle);
    let idle_rss_kib = resident_kib(server.pid())?;
    let stop = server.stop()?;
    Ok(StartupRun {
        listening: server.listening,
        healthy: server.healthy,
        idle_rss_kib,
        stop,
    })
}
