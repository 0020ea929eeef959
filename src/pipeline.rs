//! Runs and audits, end to end: config → data → train → predictions → metrics → report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Once;
use std::time::Instant;

use crate::cli::ExecutionChoice;
use crate::config::{AuditConfig, RunConfig};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::metrics::analysis::{analyze, Analysis};
use crate::model::MAX_PARAMETERS;
use crate::randomness::{derive_seed, Source, BOOTSTRAP_STREAM};
use crate::report::audit::{AuditReport, GroupReport};
use crate::report::{self, DatasetInfo, Execution, ModelReport, Report};
use crate::train::{refresh_keep, train_model, DeviceChoice, Mitigation, ModelSpec, TrainData};
use crate::{fused, parallel};

/// What training reports as it goes, for progress output.
pub enum Event<'a> {
    EpochDone,
    ModelDone(&'a ModelReport),
}

/// Inter-op parallelism is pinned to one thread: the models are small, and a
/// fixed value keeps it out of the list of things that could differ between runs.
const INTER_OP_THREADS: usize = 1;

fn pin_inter_op_threads() {
    // libtorch accepts this once per process, before any parallel work.
    static PINNED: Once = Once::new();
    PINNED.call_once(|| tch::set_num_interop_threads(INTER_OP_THREADS as i32));
}

/// The data, once, and every model trained so far, keyed so that a model
/// asked for twice (same recipe, same spec) is trained once.
struct Session<'a> {
    config: &'a RunConfig,
    tensors: TrainData,
    dataset: DatasetInfo,
    /// The decoded test set, for the pictures of flipped examples.
    test: Dataset,
    models: Vec<ModelReport>,
    logits: Vec<Vec<f32>>,
    by_key: HashMap<String, usize>,
    reused: usize,
    /// Execution modes used so far, and the wall-clock seconds of training.
    modes: BTreeSet<&'static str>,
    train_seconds: f64,
}

impl<'a> Session<'a> {
    fn open(config: &'a RunConfig) -> Result<Self> {
        pin_inter_op_threads();
        let device = config.device.resolve()?;
        let prepared = data::load(&config.data)?;
        let split = &prepared.split;
        let tensors = TrainData::new(split, device)?;
        let parameters = config.model.parameter_count(tensors.shape);
        if parameters > MAX_PARAMETERS {
            return Err(Error::usage(
                "--hidden",
                format!(
                    "the model would have {parameters} parameters; the limit is {MAX_PARAMETERS}"
                ),
            ));
        }
        check_refresh(config.refresh_fraction, split.train.len())?;
        Ok(Session {
            config,
            tensors,
            dataset: DatasetInfo::describe(&prepared),
            test: prepared.split.test,
            models: Vec::new(),
            logits: Vec::new(),
            by_key: HashMap::new(),
            reused: 0,
            modes: BTreeSet::new(),
            train_seconds: 0.0,
        })
    }

    /// The index of the model `spec` describes, training it if it is new.
    fn obtain(&mut self, spec: &ModelSpec, on_event: &mut dyn FnMut(Event)) -> Result<usize> {
        let key = self.config.model_key(spec);
        if let Some(&index) = self.by_key.get(&key) {
            self.reused += 1;
            return Ok(index);
        }
        let index = self.models.len();
        let started = Instant::now();
        let trained = train_model(
            index,
            spec,
            &self.tensors,
            &self.config.model,
            &self.config.train,
            &mut || on_event(Event::EpochDone),
        )?;
        self.train_seconds += started.elapsed().as_secs_f64();
        self.modes.insert("sequential");
        let model = ModelReport::new(index, key.clone(), spec, &trained, &self.dataset);
        on_event(Event::ModelDone(&model));
        self.models.push(model);
        self.logits.push(trained.test_logits);
        self.by_key.insert(key, index);
        Ok(index)
    }

    /// The indices of a group's models, training those that are new: side
    /// by side when `parallel`, else one after another.
    fn obtain_group(
        &mut self,
        specs: &[ModelSpec],
        parallel: bool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Vec<usize>> {
        if !parallel {
            return specs
                .iter()
                .map(|spec| self.obtain(spec, on_event))
                .collect();
        }
        // Each model computes on one thread: bitwise the sequential model
        // with one thread (tests/execution.rs), so it shares that model's key.
        let specs: Vec<ModelSpec> = specs
            .iter()
            .map(|spec| ModelSpec {
                threads: 1,
                ..spec.clone()
            })
            .collect();
        let mut fresh: Vec<(usize, ModelSpec)> = Vec::new();
        let mut members = Vec::with_capacity(specs.len());
        for spec in &specs {
            let key = self.config.model_key(spec);
            let index = match self.by_key.get(&key) {
                Some(&index) => {
                    self.reused += 1;
                    index
                }
                None => {
                    let index = self.models.len() + fresh.len();
                    self.by_key.insert(key, index);
                    fresh.push((index, spec.clone()));
                    index
                }
            };
            members.push(index);
        }
        if fresh.is_empty() {
            return Ok(members);
        }
        let started = Instant::now();
        let trained = parallel::train_group(
            &fresh,
            &self.tensors,
            &self.config.model,
            &self.config.train,
            self.config.threads,
            &mut || on_event(Event::EpochDone),
        )?;
        self.train_seconds += started.elapsed().as_secs_f64();
        self.modes.insert("parallel");
        for ((index, spec), trained) in fresh.iter().zip(trained) {
            let key = self.config.model_key(spec);
            let mut model = ModelReport::new(*index, key, spec, &trained, &self.dataset);
            model.execution = "parallel".into();
            on_event(Event::ModelDone(&model));
            self.models.push(model);
            self.logits.push(trained.test_logits);
        }
        Ok(members)
    }

    /// Whether a group trains in parallel: as `--execution` asks, where the
    /// group allows it (auto and parallel alike fall back to sequential for
    /// a group that cannot; `run` refuses `--execution parallel` instead).
    fn parallel(&self, specs: &[ModelSpec]) -> Result<bool, &'static str> {
        match self.config.execution {
            ExecutionChoice::Sequential => Ok(false),
            ExecutionChoice::Auto | ExecutionChoice::Parallel => {
                parallel_refusal(self.config, specs).map_or(Ok(true), Err)
            }
        }
    }

    fn analyze(&self, members: &[usize]) -> Analysis {
        let outcomes: Vec<_> = members
            .iter()
            .map(|&i| self.models[i].outcome(&self.logits[i]))
            .collect();
        let bootstrap_seed = derive_seed(self.config.base_seed, BOOTSTRAP_STREAM, 0);
        analyze(
            &outcomes,
            &self.dataset.test_set(),
            self.config.tie_epsilon,
            bootstrap_seed,
        )
    }

    fn execution(&self) -> Execution {
        let parallel = self.modes.contains("parallel");
        let sequential = self.modes.contains("sequential");
        Execution {
            device: self.config.device.to_string(),
            intra_op_threads: if parallel && !sequential {
                1
            } else {
                self.config.threads
            },
            inter_op_threads: INTER_OP_THREADS,
            mode: match (sequential, parallel) {
                (true, true) => "mixed",
                (false, true) => "parallel",
                _ => "sequential",
            }
            .into(),
            workers: if parallel { self.config.threads } else { 1 },
            train_seconds: self.train_seconds,
        }
    }
}

/// Why a group cannot train in parallel, if it cannot: the fused engine
/// trains MLPs (and linear models) on the CPU without mitigation, and the
/// models of a group must differ in nothing but seeds (the audit's threads
/// and kernels groups train sequentially, as their point is the difference).
pub fn parallel_refusal(config: &RunConfig, specs: &[ModelSpec]) -> Option<&'static str> {
    if config.device != DeviceChoice::Cpu {
        return Some("parallel execution runs on the CPU only");
    }
    if !fused::supports(config.model.kind) {
        return Some("the cnn model trains sequentially only");
    }
    if config.train.mitigation != Mitigation::None {
        return Some("models with a mitigation train sequentially only");
    }
    let differ = specs.windows(2).any(|pair| {
        pair[0].threads != pair[1].threads
            || pair[0].deterministic_kernels != pair[1].deterministic_kernels
    });
    differ.then_some("the group's models differ in thread count or kernels")
}

/// A refresh that keeps every row, or none, would make data-refresh models
/// identical, or untrainable: refused before any training.
fn check_refresh(fraction: f64, n_train: usize) -> Result<()> {
    let keep = refresh_keep(n_train, fraction);
    if keep == 0 || keep == n_train {
        return Err(Error::usage(
            "--refresh-fraction",
            format!("{fraction} keeps {keep} of the {n_train} training examples; it must keep some but not all"),
        ));
    }
    Ok(())
}

/// Trains every model of `config` and builds the report; `on_event` hears of
/// each epoch and model as it finishes (for progress output).
pub fn run(config: RunConfig, on_event: &mut dyn FnMut(Event)) -> Result<Report> {
    let mut session = Session::open(&config)?;
    // Every model is trained, even when nothing varies: that is the test.
    let specs: Vec<ModelSpec> = (0..config.models)
        .map(|index| config.model_spec(&config.vary, index, index))
        .collect();
    let parallel = match session.parallel(&specs) {
        Ok(parallel) => parallel,
        Err(reason) if config.execution == ExecutionChoice::Parallel => {
            return Err(Error::usage("--execution", format!("parallel: {reason}")))
        }
        Err(_) => false,
    };
    let members = session.obtain_group(&specs, parallel, on_event)?;
    let analysis = session.analyze(&members);
    let execution = session.execution();
    let Session {
        dataset,
        models,
        test,
        ..
    } = session;
    let mut report = Report::build(config, execution, dataset, models, analysis);
    report.attach_pixels(&test);
    Ok(report)
}

/// One audit group as planned: its models, or why it cannot run here.
pub struct PlannedGroup {
    pub source: &'static str,
    pub models: Result<Vec<ModelSpec>, &'static str>,
}

/// The audit's groups in report order: the control (replicas of model 0, so
/// any difference is non-determinism), one group per seed source varied
/// alone, threads, kernels, and every seed varied together.
pub fn audit_plan(config: &AuditConfig) -> Vec<PlannedGroup> {
    let control = &config.control;
    let n = control.models;
    let none = BTreeSet::new();
    let varying =
        |vary: &BTreeSet<Source>| (0..n).map(|k| control.model_spec(vary, k, 0)).collect();
    let mut groups = vec![PlannedGroup {
        source: "control",
        models: Ok((0..n).map(|k| control.model_spec(&none, 0, k)).collect()),
    }];
    for source in Source::ALL {
        groups.push(PlannedGroup {
            source: source.name(),
            models: Ok(varying(&BTreeSet::from([source]))),
        });
    }
    let counts = &config.thread_counts;
    groups.push(PlannedGroup {
        source: "threads",
        models: if counts.len() < 2 {
            Err("only one thread count to compare (--thread-counts)")
        } else {
            Ok((0..n)
                .map(|k| ModelSpec {
                    threads: counts[k % counts.len()],
                    ..control.model_spec(&none, 0, k)
                })
                .collect())
        },
    });
    groups.push(PlannedGroup {
        source: "kernels",
        models: match control.device {
            DeviceChoice::Cpu => Err("no CUDA device"),
            DeviceChoice::Cuda(_) => Ok((0..n)
                .map(|k| ModelSpec {
                    deterministic_kernels: false,
                    ..control.model_spec(&none, 0, k)
                })
                .collect()),
        },
    });
    groups.push(PlannedGroup {
        source: "all",
        models: Ok(varying(&Source::ALL.into_iter().collect())),
    });
    groups
}

/// How many distinct models an audit trains (groups share models).
pub fn distinct_audit_models(config: &AuditConfig) -> usize {
    let plan = audit_plan(config);
    let specs = plan
        .iter()
        .filter_map(|group| group.models.as_ref().ok())
        .flatten();
    specs
        .map(|spec| config.control.model_key(spec))
        .collect::<BTreeSet<_>>()
        .len()
}

/// Trains every planned group, reusing any model two groups share.
pub fn audit(config: AuditConfig, on_event: &mut dyn FnMut(Event)) -> Result<AuditReport> {
    let mut session = Session::open(&config.control)?;
    let mut groups = Vec::new();
    for planned in audit_plan(&config) {
        groups.push(match planned.models {
            Ok(specs) => {
                let parallel = session.parallel(&specs).unwrap_or(false);
                let members = session.obtain_group(&specs, parallel, on_event)?;
                let mut analysis = session.analyze(&members);
                // The group the HTML page shows; pictures elsewhere would only bloat the JSON.
                if planned.source == "all" {
                    report::attach_pixels(&mut analysis.flips, &session.test);
                }
                GroupReport::measured(planned.source, members, analysis)
            }
            Err(reason) => GroupReport::not_applicable(planned.source, reason),
        });
    }
    let reused = session.reused;
    let (execution, dataset, models) = (session.execution(), session.dataset, session.models);
    Ok(AuditReport::build(
        config, execution, dataset, models, groups, reused,
    ))
}
