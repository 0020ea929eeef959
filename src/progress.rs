//! Progress on stderr while models train: a bar per epoch with an ETA where
//! someone watches a terminal, one line per finished model where stderr is a
//! log (CI), nothing with --quiet.

use std::cell::Cell;

use indicatif::{ProgressBar, ProgressStyle};

use crate::artifacts::ReplacedPlan;
use crate::pipeline::Event;
use crate::report::ModelReport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Silent,
    /// One line per finished model.
    Lines,
    Bar,
}

impl Mode {
    /// The bar only on a terminal and not while stdout carries JSON: that
    /// stdout is read by a program, and whoever runs it wants a plain log.
    pub fn choose(quiet: bool, stderr_is_terminal: bool, json_on_stdout: bool) -> Mode {
        if quiet {
            Mode::Silent
        } else if stderr_is_terminal && !json_on_stdout {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

pub struct Progress {
    mode: Mode,
    total: usize,
    epochs: usize,
    bar: Option<ProgressBar>,
    /// Models finished so far: models side by side finish in any order, so
    /// a model's index does not count them.
    done: Cell<usize>,
}

impl Progress {
    /// `total` models of `epochs` epochs each.
    pub fn new(mode: Mode, total: usize, epochs: usize) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::new((total * epochs) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "training [{bar:25}] {pos}/{len} epochs, ETA {eta}, {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            mode,
            total,
            epochs,
            bar,
            done: Cell::new(0),
        }
    }

    pub fn observe(&self, event: Event) {
        match event {
            Event::EpochDone => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Event::ModelDone(model) => self.model_done(model, "trained"),
            Event::ModelReused(model) => {
                if let Some(bar) = &self.bar {
                    bar.inc(self.epochs as u64);
                }
                self.model_done(model, "reused from its artifact");
            }
            // A warning, not progress: said even when quiet.
            Event::PlanReplaced(previous) => eprintln!("{}", plan_replaced(previous)),
        }
    }

    fn model_done(&self, model: &ModelReport, how: &str) {
        self.done.set(self.done.get() + 1);
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                // Short enough for an 80-column terminal: a wrapped bar redraws badly.
                bar.set_message(format!("last model {:.2}%", model.accuracy * 100.0));
            }
            (None, Mode::Lines) => eprintln!(
                "model {}: accuracy {:.2}%, {:.2} s ({}/{} {how})",
                model.index,
                model.accuracy * 100.0,
                model.train_seconds,
                self.done.get(),
                self.total,
            ),
            (None, _) => {}
        }
    }

    /// Clears the bar, so the report starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The warning for a run directory whose plan, of another config, was replaced.
pub fn plan_replaced(previous: &ReplacedPlan) -> String {
    let was = match previous {
        ReplacedPlan::OtherConfig(config) => format!(
            "another config's (config_sha256 {})",
            crate::report::short_hash(config)
        ),
        ReplacedPlan::OtherModels => "this config's models trained another way (`plan` trains each alone on --threads threads, a parallel `run` each on one thread), under other keys".into(),
    };
    format!(
        "note: the run directory's plan.json was {was}; it is now this command's: array tasks still working from the old plan will train this plan's models, and `report` counts only this plan's"
    )
}

#[cfg(test)]
mod tests {
    use super::{Event, Mode, Progress};

    #[test]
    fn the_bar_advances_once_an_epoch() {
        let progress = Progress::new(Mode::Bar, 2, 3);
        let bar = progress.bar.as_ref().unwrap();
        assert_eq!(bar.length(), Some(6));
        progress.observe(Event::EpochDone);
        progress.observe(Event::EpochDone);
        assert_eq!(bar.position(), 2);
        assert!(Progress::new(Mode::Lines, 2, 3).bar.is_none());
    }

    #[test]
    fn the_bar_only_where_someone_watches() {
        assert_eq!(Mode::choose(false, true, false), Mode::Bar);
        assert_eq!(Mode::choose(false, false, false), Mode::Lines);
        assert_eq!(Mode::choose(false, true, true), Mode::Lines);
        assert_eq!(Mode::choose(true, true, false), Mode::Silent);
        assert_eq!(Mode::choose(true, false, true), Mode::Silent);
    }
}
