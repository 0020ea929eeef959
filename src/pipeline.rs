//! Runs and audits, end to end: config → data → train → predictions → metrics → report.
//! With a run directory (--out, `train`, `report`), every model goes through
//! its artifact: reused when one is intact, stored when trained.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use crate::artifacts::{Artifact, Origin, Plan, ReplacedPlan, RunDir, Unusable};
use crate::cli::ExecutionChoice;
use crate::config::{AuditConfig, RunConfig};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::metrics::analysis::{analyze, Analysis};
use crate::metrics::anchor::analyze_anchor;
use crate::metrics::churn::mean_pairwise_churn;
use crate::metrics::stats::summarize_shares;
use crate::metrics::{predict, Prediction};
use crate::parallel::GroupEvent;
use crate::randomness::{derive_seed, Source, BOOTSTRAP_STREAM};
use crate::report::audit::{AuditReport, GroupReport};
use crate::report::{
    self, short_hash, AnchorReport, CodistillPeer, CodistillReport, DatasetInfo, Execution,
    Incomplete, ModelReport, Report,
};
use crate::saved_model::{self, Anchor, ModelId, SaveDir};
use crate::train::{
    refresh_keep, train_codistilled, train_model, AnchorTargets, DeviceChoice, Mitigation,
    ModelSpec, TrainData, Trained, TrainedModel,
};
use crate::{fused, parallel};

/// What training reports as it goes, for progress output.
pub enum Event<'a> {
    EpochDone,
    ModelDone(&'a ModelReport),
    /// A model read from its artifact instead of trained.
    ModelReused(&'a ModelReport),
    /// The run directory's plan, which planned other models, was replaced
    /// by this run's.
    PlanReplaced(&'a ReplacedPlan),
}

/// Inter-op parallelism is pinned to one thread: the models are small, and a
/// fixed value keeps it out of the list of things that could differ between runs.
const INTER_OP_THREADS: usize = 1;

fn pin_inter_op_threads() {
    // libtorch accepts this once per process, before any parallel work.
    static PINNED: Once = Once::new();
    PINNED.call_once(|| tch::set_num_interop_threads(INTER_OP_THREADS as i32));
}

/// What a run or audit reads and writes besides its config and reports.
#[derive(Clone, Debug, Default)]
pub struct ModelFiles {
    /// A previous model (or its predictions) to measure against and, with
    /// `--mitigate anchor`, to distil toward.
    pub anchor: Option<PathBuf>,
    /// Where every trained model is saved.
    pub save_models: Option<PathBuf>,
}

/// The data, once, and every model obtained so far, keyed so that a model
/// asked for twice (same recipe, same spec) is trained once.
struct Session<'a> {
    config: RunConfig,
    /// Where artifacts are read and written, if anywhere.
    store: Option<&'a RunDir>,
    /// What an artifact must have been trained with to be used.
    origin: Origin,
    dataset: DatasetInfo,
    /// The decoded test set, for the pictures of flipped examples.
    test: Dataset,
    models: Vec<ModelReport>,
    logits: Vec<Vec<f32>>,
    by_key: HashMap<String, usize>,
    reused: usize,
    anchor: Option<Anchor>,
    anchor_targets: Option<AnchorTargets>,
    save_models: Option<SaveDir>,
    /// Co-distillation's other members of each model's run.
    peers: Vec<CodistillPeer>,
    /// Wall-clock seconds of the training this session did.
    train_seconds: f64,
    /// Most worker threads a parallel group of this session used.
    workers: usize,
}

impl<'a> Session<'a> {
    /// A session that trains: the data, its tensors on the training device,
    /// and the anchor if there is one.
    fn open(
        mut config: RunConfig,
        files: &ModelFiles,
        store: Option<&'a RunDir>,
    ) -> Result<(Self, TrainData)> {
        pin_inter_op_threads();
        let device = config.device.resolve()?;
        let prepared = data::load(&config.data)?;
        let split = &prepared.split;
        let tensors = TrainData::new(split, device)?;
        if let Some(problem) = config.model.problem(tensors.shape) {
            return Err(Error::usage("--hidden", problem));
        }
        check_refresh(config.refresh_fraction, split.train.len())?;
        check_burn_in(&config, split.train.len())?;
        let dataset = DatasetInfo::describe(&prepared);
        let anchor = files
            .anchor
            .as_deref()
            .map(|path| saved_model::load_anchor(path, &tensors, &dataset))
            .transpose()?;
        let save_models = files
            .save_models
            .as_deref()
            .map(saved_model::check_directory)
            .transpose()?;
        let mut anchor_targets = None;
        if let (Mitigation::Anchor { anchor_sha256, .. }, Some(anchor)) =
            (&mut config.train.mitigation, &anchor)
        {
            // The anchor is part of the recipe: another anchor, another model.
            anchor_sha256.clone_from(&anchor.info.sha256);
            anchor_targets = Some(AnchorTargets::new(
                &anchor.train_probabilities,
                &tensors,
                &config.train.mitigation,
            )?);
        }
        let mut session = Session::over(config, store, dataset, prepared.split.test);
        session.anchor = anchor;
        session.anchor_targets = anchor_targets;
        session.save_models = save_models;
        Ok((session, tensors))
    }

    /// A session over the data alone, that only reads artifacts (`report`).
    fn over(
        config: RunConfig,
        store: Option<&'a RunDir>,
        dataset: DatasetInfo,
        test: Dataset,
    ) -> Self {
        Session {
            config,
            store,
            origin: Origin::here(&dataset),
            dataset,
            test,
            models: Vec::new(),
            logits: Vec::new(),
            by_key: HashMap::new(),
            reused: 0,
            anchor: None,
            anchor_targets: None,
            save_models: None,
            peers: Vec::new(),
            train_seconds: 0.0,
            workers: 1,
        }
    }

    /// The index of the model `spec` describes, from its artifact if intact,
    /// else trained on `tensors` (and stored). With co-distillation, `spec`
    /// is the first member of its run, trained together with the others.
    fn obtain(
        &mut self,
        tensors: &TrainData,
        spec: &ModelSpec,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<usize> {
        let key = self.config.model_key(spec);
        if let Some(&index) = self.by_key.get(&key) {
            self.reused += 1;
            return Ok(index);
        }
        // Held from the look-up to the save: a second process training the
        // same model waits, then finds the artifact.
        let _lock = self.store.map(|dir| dir.lock(&key)).transpose()?;
        match self.stored(&key, spec) {
            Ok(index) => {
                on_event(Event::ModelReused(&self.models[index]));
                return Ok(index);
            }
            Err(unusable) => self.will_retrain(&key, unusable),
        }
        let index = self.models.len();
        let started = Instant::now();
        let (trained, peers) = self.train(index, &key, tensors, spec, on_event)?;
        self.train_seconds += started.elapsed().as_secs_f64();
        let model = ModelReport::new(index, key.clone(), spec, &trained, &self.dataset);
        self.keep(key, spec, model, trained, peers, on_event)
    }

    /// Stores a newly trained model's artifact (with a run directory), then
    /// adds it: its index.
    fn keep(
        &mut self,
        key: String,
        spec: &ModelSpec,
        model: ModelReport,
        trained: Trained,
        peers: Vec<Trained>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<usize> {
        let (trained, peers) = self.store_artifact(&key, spec, &model, trained, peers)?;
        on_event(Event::ModelDone(&model));
        Ok(self.add(key, spec, model, trained, peers))
    }

    /// Writes model `key`'s artifact where there is a run directory, and
    /// hands its results back.
    fn store_artifact(
        &self,
        key: &str,
        spec: &ModelSpec,
        model: &ModelReport,
        trained: Trained,
        peers: Vec<Trained>,
    ) -> Result<(Trained, Vec<Trained>)> {
        let Some(dir) = self.store else {
            return Ok((trained, peers));
        };
        let artifact = Artifact {
            key: key.to_owned(),
            model: self.config.resolve(spec),
            origin: self.origin.clone(),
            accuracy: model.accuracy,
            trained,
            peers,
        };
        dir.save(&artifact)?;
        Ok((artifact.trained, artifact.peers))
    }

    /// The indices of a group's models, training those that are new: side
    /// by side when `parallel`, else one after another.
    fn obtain_group(
        &mut self,
        tensors: &TrainData,
        specs: &[ModelSpec],
        parallel: bool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Vec<usize>> {
        if !parallel {
            return specs
                .iter()
                .map(|spec| self.obtain(tensors, spec, on_event))
                .collect();
        }
        let specs = one_thread_each(specs);
        let keys: Vec<String> = specs.iter().map(|s| self.config.model_key(s)).collect();
        // Locks in key order, so that processes sharing a run directory
        // cannot each hold one the other waits for.
        let mut wanted: Vec<&String> = keys
            .iter()
            .filter(|key| !self.by_key.contains_key(*key))
            .collect();
        wanted.sort();
        wanted.dedup();
        let _locks = match self.store {
            Some(dir) => wanted
                .iter()
                .map(|key| dir.lock(key))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        // Which new models need training; the rest come from their artifacts.
        let mut fresh: Vec<(usize, ModelSpec)> = Vec::new();
        for (position, (spec, key)) in specs.iter().zip(&keys).enumerate() {
            let known = self.by_key.contains_key(key)
                || fresh.iter().any(|(p, _)| keys[*p] == *key)
                || self.usable_artifact(key);
            if !known {
                fresh.push((position, spec.clone()));
            }
        }
        // The index each new model will have in the report: models join it
        // in group order, a key seen before joining once.
        let mut next = self.models.len();
        let mut indices = HashMap::new();
        for key in &keys {
            if !self.by_key.contains_key(key) && !indices.contains_key(key) {
                indices.insert(key.clone(), next);
                next += 1;
            }
        }
        let mut trained: Vec<Option<TrainedModel>> = if fresh.is_empty() {
            Vec::new()
        } else {
            let started = Instant::now();
            // Each model is stored and reported as it finishes, so a run
            // killed later keeps it; it joins the report at the end.
            let session = &*self;
            let trained = parallel::train_group(
                &fresh,
                tensors,
                &self.config.model,
                &self.config.train,
                self.config.threads,
                self.save_models.is_some(),
                &mut |progress| {
                    match progress {
                        GroupEvent::EpochDone => on_event(Event::EpochDone),
                        GroupEvent::Finished(slot, trained) => {
                            let (position, spec) = &fresh[slot];
                            let key = &keys[*position];
                            let model = ModelReport::new(
                                indices[key],
                                key.clone(),
                                spec,
                                trained,
                                &session.dataset,
                            );
                            session.store_artifact(
                                key,
                                spec,
                                &model,
                                trained.clone(),
                                Vec::new(),
                            )?;
                            on_event(Event::ModelDone(&model));
                        }
                    }
                    Ok(())
                },
            )?;
            self.train_seconds += started.elapsed().as_secs_f64();
            self.workers = self.workers.max(self.config.threads.min(fresh.len()));
            trained.into_iter().map(Some).collect()
        };
        // Added in the group's order, so that indices do not depend on
        // which models were found stored.
        let mut members = Vec::with_capacity(specs.len());
        for (position, (spec, key)) in specs.iter().zip(&keys).enumerate() {
            let index = match fresh.iter().position(|(p, _)| *p == position) {
                Some(slot) => {
                    let done = trained[slot].take().expect("each fresh model is kept once");
                    let index = self.models.len();
                    if let Some(dir) = &self.save_models {
                        let id = ModelId { index, key, spec };
                        saved_model::save(
                            dir.path(),
                            &self.config,
                            id,
                            &done,
                            tensors,
                            &self.dataset,
                        )?;
                    }
                    debug_assert_eq!(index, indices[key]);
                    let model =
                        ModelReport::new(index, key.clone(), spec, &done.result, &self.dataset);
                    self.add(key.clone(), spec, model, done.result, Vec::new())
                }
                // Not through `obtain`: this process already holds the lock.
                None => match self.by_key.get(key) {
                    Some(&index) => {
                        self.reused += 1;
                        index
                    }
                    None => {
                        let index = self.stored(key, spec).map_err(|why| Error::RunDir {
                            path: self.store.map(|d| d.artifact_path(key)).unwrap_or_default(),
                            message: format!("changed while in use: {why:?}"),
                        })?;
                        on_event(Event::ModelReused(&self.models[index]));
                        index
                    }
                },
            };
            members.push(index);
        }
        Ok(members)
    }

    /// Whether `key`'s artifact can be used, saying why not if it is there
    /// but damaged or foreign.
    fn usable_artifact(&self, key: &str) -> bool {
        let Some(dir) = self.store else {
            return false;
        };
        match dir.load(key, &self.origin, &self.config, &self.dataset) {
            Ok(_) => true,
            Err(unusable) => {
                self.will_retrain(key, unusable);
                false
            }
        }
    }

    /// Says on stderr why a stored model cannot be used, when it is there.
    fn will_retrain(&self, key: &str, unusable: Unusable) {
        if let (Unusable::Damaged(why) | Unusable::Mismatch(why), Some(dir)) =
            (unusable, self.store)
        {
            let path = dir.artifact_path(key);
            eprintln!("{}: {why}; training that model again", path.display());
        }
    }

    /// Whether a group trains in parallel: as `--execution` asks, where the
    /// group allows it (auto and parallel alike fall back to sequential for
    /// a group that cannot; `run` refuses `--execution parallel` instead).
    fn parallel(&self, specs: &[ModelSpec]) -> Result<bool, &'static str> {
        match self.config.execution {
            ExecutionChoice::Sequential => Ok(false),
            ExecutionChoice::Auto | ExecutionChoice::Parallel => {
                parallel_refusal(&self.config, specs).map_or(Ok(true), Err)
            }
        }
    }

    /// Trains model `index` (and its co-distilled peers), saving it for
    /// --save-models.
    fn train(
        &self,
        index: usize,
        key: &str,
        tensors: &TrainData,
        spec: &ModelSpec,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(Trained, Vec<Trained>)> {
        let config = &self.config;
        let mut on_epoch = || on_event(Event::EpochDone);
        let mut trained = match config.train.mitigation {
            Mitigation::Codistill { k, .. } => {
                let members = codistill_members(spec, k);
                train_codistilled(
                    index,
                    &members,
                    tensors,
                    &config.model,
                    &config.train,
                    &mut on_epoch,
                )?
            }
            _ => vec![train_model(
                index,
                spec,
                tensors,
                &config.model,
                &config.train,
                self.anchor_targets.as_ref(),
                &mut on_epoch,
            )?],
        };
        let peers = trained.split_off(1);
        let trained = trained.pop().expect("a run trains at least one model");
        if let Some(dir) = &self.save_models {
            let id = ModelId { index, key, spec };
            saved_model::save(dir.path(), config, id, &trained, tensors, &self.dataset)?;
        }
        let peers = peers.into_iter().map(|peer| peer.result).collect();
        Ok((trained.result, peers))
    }

    /// The index of model `key` read from its artifact, or why it cannot be.
    fn stored(&mut self, key: &str, spec: &ModelSpec) -> Result<usize, Unusable> {
        let artifact = match self.store {
            Some(dir) => dir.load(key, &self.origin, &self.config, &self.dataset)?,
            None => return Err(Unusable::Missing),
        };
        let index = self.models.len();
        let model = ModelReport::new(index, key.into(), spec, &artifact.trained, &self.dataset);
        Ok(self.add(key.into(), spec, model, artifact.trained, artifact.peers))
    }

    fn add(
        &mut self,
        key: String,
        spec: &ModelSpec,
        model: ModelReport,
        trained: Trained,
        peers: Vec<Trained>,
    ) -> usize {
        let index = self.models.len();
        for (member, peer) in (1..).zip(&peers) {
            let seeds = spec.seeds.codistill_member(member as u64);
            self.peers.push(CodistillPeer::new(
                index,
                member,
                seeds,
                peer,
                &self.dataset,
            ));
        }
        self.models.push(model);
        self.logits.push(trained.test_logits);
        self.by_key.insert(key, index);
        index
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

    /// Each member model against the anchor, when there is one.
    fn anchor_report(&self, members: &[usize]) -> Option<AnchorReport> {
        let anchor = self.anchor.as_ref()?;
        let anchor_predicted = predict(&anchor.test_probabilities, self.dataset.n_classes);
        let models: Vec<(usize, &[Prediction])> = members
            .iter()
            .map(|&i| (i, self.models[i].predicted.as_slice()))
            .collect();
        Some(AnchorReport {
            anchor: anchor.info.clone(),
            analysis: analyze_anchor(
                &anchor_predicted,
                &models,
                &self.dataset.test_labels,
                derive_seed(self.config.base_seed, BOOTSTRAP_STREAM, 1),
            ),
        })
    }

    /// Churn within each co-distilled run (its members against each other),
    /// when the mitigation is codistill.
    fn codistill_report(&self, members: &[usize]) -> Option<CodistillReport> {
        let Mitigation::Codistill { k, .. } = self.config.train.mitigation else {
            return None;
        };
        let within_run: Vec<f64> = members
            .iter()
            .map(|&first| {
                let mut run = vec![self.models[first].predicted.clone()];
                run.extend(
                    self.peers
                        .iter()
                        .filter(|peer| peer.run == first)
                        .map(|peer| peer.predicted.clone()),
                );
                mean_pairwise_churn(&run)
            })
            .collect();
        Some(CodistillReport {
            k,
            within_run_churn: summarize_shares(&within_run),
            per_run: within_run,
            peers: self.peers.clone(),
        })
    }

    /// How the session's models were trained, from each model's own record
    /// (so a resumed run reports how its stored models were trained); a
    /// report put together from artifacts alone says "artifacts".
    fn execution(&self, aggregated: bool) -> Execution {
        let trained_by = |mode: &str| self.models.iter().any(|m| m.execution == mode);
        let (parallel, sequential) = (trained_by("parallel"), trained_by("sequential"));
        let mode = match (aggregated, sequential, parallel) {
            (true, _, _) => "artifacts",
            (false, true, true) => "mixed",
            (false, false, true) => "parallel",
            _ => "sequential",
        };
        Execution {
            device: self.config.device.to_string(),
            intra_op_threads: if parallel && !sequential {
                1
            } else {
                self.config.threads
            },
            inter_op_threads: INTER_OP_THREADS,
            mode: mode.into(),
            workers: self.workers,
            train_seconds: self.train_seconds,
        }
    }

    /// The run report over `members`, in that order.
    fn report(self, members: &[usize], aggregated: bool) -> Report {
        let analysis = self.analyze(members);
        let execution = self.execution(aggregated);
        let anchor = self.anchor_report(members);
        let codistill = self.codistill_report(members);
        let mut report = Report::build(self.config, execution, self.dataset, self.models, analysis);
        report.anchor = anchor;
        report.codistill = codistill;
        report.attach_pixels(&self.test);
        report
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
    if config.model.dropout > 0.0 && !fused::replicates_libtorch_dropout() {
        return Some(
            "this libtorch draws dropout masks in a way the parallel mode does not replicate",
        );
    }
    let differ = specs.windows(2).any(|pair| {
        pair[0].threads != pair[1].threads
            || pair[0].deterministic_kernels != pair[1].deterministic_kernels
    });
    differ.then_some("the group's models differ in thread count or kernels")
}

/// The members of the co-distilled run whose first member is `first`: the
/// first keeps its own seeds (so at α = 0 it is the model trained without
/// co-distillation), the others draw new init and dropout seeds from it
/// (docs/randomness.md) and share its data order and training rows.
fn codistill_members(first: &ModelSpec, k: usize) -> Vec<ModelSpec> {
    (0..k)
        .map(|member| ModelSpec {
            seeds: first.seeds.codistill_member(member as u64),
            ..first.clone()
        })
        .collect()
}

/// A burn-in as long as training would make co-distillation plain training
/// under its name: refused before any training. Counted for the smallest
/// training set a model may see (a refreshed subsample).
fn check_burn_in(config: &RunConfig, n_train: usize) -> Result<()> {
    let Mitigation::Codistill { burn_in, .. } = config.train.mitigation else {
        return Ok(());
    };
    let rows = refresh_keep(n_train, config.refresh_fraction).min(n_train);
    let steps = config.train.epochs * rows.div_ceil(config.train.batch_size);
    if burn_in >= steps {
        return Err(Error::usage(
            "--burn-in",
            format!("{burn_in} steps is at least the whole training ({steps} steps): distillation would never start"),
        ));
    }
    Ok(())
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

/// The models of a run, in report order, each to train alone with
/// `--threads` intra-op threads (as `train --index` does).
fn planned_specs(config: &RunConfig) -> Vec<ModelSpec> {
    // Every model is trained, even when nothing varies: that is the test.
    (0..config.models)
        .map(|index| config.model_spec(&config.vary, index, index))
        .collect()
}

/// The models of a run as this process trains them: in parallel mode each
/// on one thread (so a run directory names them as trained).
fn run_specs(config: &RunConfig) -> Vec<ModelSpec> {
    let specs = planned_specs(config);
    let parallel = config.execution != ExecutionChoice::Sequential
        && parallel_refusal(config, &specs).is_none();
    if parallel {
        one_thread_each(&specs)
    } else {
        specs
    }
}

/// The specs as the parallel mode trains them: each model computes on one
/// thread, bitwise the sequential model with one thread (tests/execution.rs),
/// so it is that model, with its key.
fn one_thread_each(specs: &[ModelSpec]) -> Vec<ModelSpec> {
    specs
        .iter()
        .map(|spec| ModelSpec {
            threads: 1,
            ..spec.clone()
        })
        .collect()
}

/// Trains every model of `config` (reusing those stored in `store`) and
/// builds the report; `on_event` hears of each epoch and model as it finishes
/// (for progress output).
pub fn run(
    config: RunConfig,
    files: &ModelFiles,
    store: Option<&RunDir>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Report> {
    let (mut session, tensors) = Session::open(config, files, store)?;
    let specs = run_specs(&session.config);
    let parallel = match session.parallel(&specs) {
        Ok(parallel) => parallel,
        Err(reason) if session.config.execution == ExecutionChoice::Parallel => {
            return Err(Error::usage("--execution", format!("parallel: {reason}")))
        }
        Err(_) => false,
    };
    if let Some(dir) = store {
        // Written first, so `report DIR` can tell what an interrupted run lacks.
        let plan = Plan::new(
            session.config.clone(),
            session.origin.clone(),
            specs.clone(),
        );
        if let Some(previous) = dir.write_plan(&plan)? {
            on_event(Event::PlanReplaced(&previous));
        }
    }
    let members = session.obtain_group(&tensors, &specs, parallel, on_event)?;
    Ok(session.report(&members, false))
}

/// The plan of a run, against the data as it is now.
pub fn plan(config: &RunConfig) -> Result<Plan> {
    let prepared = data::load(&config.data)?;
    let origin = Origin::here(&DatasetInfo::describe(&prepared));
    Ok(Plan::new(config.clone(), origin, planned_specs(config)))
}

/// Trains model `index` of the plan in `dir` (or finds it already stored).
pub fn train_planned(
    dir: &RunDir,
    plan: &Plan,
    index: usize,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    if matches!(plan.config.train.mitigation, Mitigation::Anchor { .. }) {
        // `run --out` writes such a plan; a task has no --anchor to distil toward.
        return Err(Error::RunDir {
            path: dir.root().join("plan.json"),
            message: "its models distil toward an anchor, which `train` does not load; resume it with the `churn-audit run ... --anchor PATH --out DIR` that wrote it".into(),
        });
    }
    let files = ModelFiles::default();
    let (mut session, tensors) = Session::open(plan.config.clone(), &files, Some(dir))?;
    plan.require(
        &session.origin,
        dir.root(),
        "this machine's libtorch or data",
    )?;
    let spec = &plan.models[index].spec;
    // A requeued task of a stored model has nothing to do, even where the
    // directory has since become read-only.
    let key = session.config.model_key(spec);
    if let Ok(stored) = session.stored(&key, spec) {
        on_event(Event::ModelReused(&session.models[stored]));
        return Ok(());
    }
    dir.prepare_slot(&key)?;
    session.obtain(&tensors, spec, on_event)?;
    Ok(())
}

/// The report over every planned model of `dir` with an intact artifact that
/// matches the plan's data and libtorch, and one line per planned model that
/// has none. Nothing is trained.
pub fn collect(dir: &RunDir, plan: &Plan, anchor: Option<&Path>) -> Result<Report> {
    let prepared = data::load(&plan.config.data)?;
    let dataset = DatasetInfo::describe(&prepared);
    let anchor = match anchor {
        Some(path) => Some(collected_anchor(path, &plan.config, &prepared, &dataset)?),
        None => None,
    };
    let mut session = Session::over(plan.config.clone(), Some(dir), dataset, prepared.split.test);
    session.anchor = anchor;
    // The artifacts are judged against the plan; the data here must be the plan's too.
    let here = Origin {
        libtorch: plan.origin.libtorch.clone(),
        ..session.origin.clone()
    };
    plan.require(&here, dir.root(), "the data here")?;
    session.origin = plan.origin.clone();
    let mut members = Vec::new();
    let mut problems = Vec::new();
    for planned in &plan.models {
        let path = dir.artifact_path(&planned.key);
        match session.stored(&planned.key, &planned.spec) {
            Ok(index) => {
                // The plan's numbering, so that a missing model leaves a gap
                // rather than renaming the models after it.
                session.models[index].index = planned.index;
                members.push(index);
            }
            Err(Unusable::Missing) => problems.push(format!(
                "model {}: missing ({} does not exist)",
                planned.index,
                path.display()
            )),
            Err(Unusable::Damaged(why)) => problems.push(format!(
                "model {}: {}: {why}",
                planned.index,
                path.display()
            )),
            Err(Unusable::Mismatch(why)) => problems.push(format!(
                "model {}: {}: not combined, it differs from the plan: {why}",
                planned.index,
                path.display()
            )),
        }
    }
    if members.len() < 2 {
        for problem in &problems {
            eprintln!("{problem}");
        }
        return Err(Error::RunDir {
            path: dir.root().to_owned(),
            message: format!(
                "only {} of the {} planned models have a usable artifact; a report needs at least 2",
                members.len(),
                plan.models.len()
            ),
        });
    }
    let planned = plan.models.len();
    let mut report = session.report(&members, true);
    report.incomplete = (!problems.is_empty()).then_some(Incomplete {
        planned,
        missing: problems,
    });
    Ok(report)
}

/// The anchor `report DIR --anchor PATH` measures against; for a run that
/// distilled toward an anchor, it must be that one.
fn collected_anchor(
    path: &Path,
    config: &RunConfig,
    prepared: &data::Prepared,
    dataset: &DatasetInfo,
) -> Result<Anchor> {
    let tensors = TrainData::new(&prepared.split, config.device.resolve()?)?;
    let anchor = saved_model::load_anchor(path, &tensors, dataset)?;
    if let Mitigation::Anchor { anchor_sha256, .. } = &config.train.mitigation {
        if *anchor_sha256 != anchor.info.sha256 {
            return Err(Error::usage(
                "--anchor",
                format!(
                    "{}: not the anchor this run distilled toward (its sha256 {}…, the run's {}…)",
                    path.display(),
                    short_hash(&anchor.info.sha256),
                    short_hash(anchor_sha256)
                ),
            ));
        }
    }
    Ok(anchor)
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

/// Trains every planned group, reusing any model two groups share (and any
/// stored in `store`).
pub fn audit(
    config: AuditConfig,
    files: &ModelFiles,
    store: Option<&RunDir>,
    on_event: &mut dyn FnMut(Event),
) -> Result<AuditReport> {
    let (mut session, tensors) = Session::open(config.control.clone(), files, store)?;
    let mut groups = Vec::new();
    for planned in audit_plan(&config) {
        groups.push(match planned.models {
            Ok(specs) => {
                let parallel = session.parallel(&specs).unwrap_or(false);
                let members = session.obtain_group(&tensors, &specs, parallel, on_event)?;
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
    let (reused, execution) = (session.reused, session.execution(false));
    let Session {
        config: control,
        dataset,
        models,
        ..
    } = session;
    // The session's config holds what loading filled in (the anchor's hash).
    let config = AuditConfig { control, ..config };
    Ok(AuditReport::build(
        config, execution, dataset, models, groups, reused,
    ))
}
