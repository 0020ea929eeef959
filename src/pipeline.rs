//! One run, end to end: config → data → train → predictions → metrics → report.

use std::sync::Once;

use crate::config::RunConfig;
use crate::data::{digits, stratified_split};
use crate::error::Result;
use crate::randomness::ModelSeeds;
use crate::report::{DatasetInfo, Execution, ModelReport, Report};
use crate::train::{train_model, TrainData};

/// Inter-op parallelism is pinned to one thread: the models are small, and a
/// fixed value keeps it out of the list of things that could differ between runs.
const INTER_OP_THREADS: usize = 1;

fn pin_inter_op_threads() {
    // libtorch accepts this once per process, before any parallel work.
    static PINNED: Once = Once::new();
    PINNED.call_once(|| tch::set_num_interop_threads(INTER_OP_THREADS as i32));
}

/// Trains every model of `config` and builds the report; `on_model` hears of
/// each model as it finishes (for progress output).
pub fn run(config: RunConfig, on_model: &mut dyn FnMut(&ModelReport)) -> Result<Report> {
    pin_inter_op_threads();
    let dataset = digits::load()?;
    let split = stratified_split(&dataset, config.data.split)?;
    let tensors = TrainData::new(&split)?;
    let mut models = Vec::with_capacity(config.models);
    for index in 0..config.models {
        let seeds = ModelSeeds::for_model(config.base_seed, &config.vary, index as u64);
        tch::set_num_threads(config.threads as i32);
        let trained = train_model(index, &seeds, &tensors, &config.model, &config.train)?;
        let model = ModelReport::new(
            index,
            seeds,
            trained,
            &split.test.labels,
            split.test.n_classes,
        );
        on_model(&model);
        models.push(model);
    }
    let execution = Execution {
        device: "cpu".into(),
        intra_op_threads: config.threads,
        inter_op_threads: INTER_OP_THREADS,
        mode: "sequential".into(),
    };
    let mut report = Report::build(
        config,
        execution,
        DatasetInfo::describe(&split.train, &split.test),
        models,
    );
    report.attach_pixels(&split.test);
    Ok(report)
}
