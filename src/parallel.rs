//! The parallel execution mode: the models of a group train side by side on
//! worker threads, each model computing on one thread (libtorch intra-op
//! threads = 1) with the fused engine (src/fused.rs). Every model owns its
//! parameters, optimiser state, dropout generator and data-order stream, so
//! what it computes does not depend on which worker runs it, when, or next
//! to which other models: a model is bitwise the same whatever the number
//! of workers or models, and bitwise the sequential path's with `--threads 1`.
//!
//! Scheduling: work is handed out in chunks of steps. While more models are
//! unfinished than the workers can share out evenly (2 × workers − 1), a
//! free worker takes the model furthest along (else builds the next), so
//! models finish one after another, in about model order, and each is
//! reported (and stored, with --out) as it finishes: a killed run keeps them.
//! For the last few, a free worker takes the waiting model with the most
//! steps left instead (so that no model is left to finish alone): models
//! then migrate between workers, and N = 5 models on 2 workers keep both
//! busy to the end.
//! Models are built as workers need them (so at most a memory budget's worth
//! of them, and at least one per worker, exist at once), one at a time:
//! initialisation draws from libtorch's global generator, which nothing else
//! touches while the group trains.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Instant;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::fused::FusedMlp;
use crate::libtorch::set_fill_uninitialized;
use crate::model::{ModelConfig, Shape};
use crate::train::{
    logits_sha256, refresh_keep, DataOrder, ModelSpec, OptimizerKind, TrainConfig, TrainData,
    Trained, TrainedModel,
};

/// A model of the group and where it stands.
struct Slot {
    index: usize,
    model: FusedMlp,
    order: DataOrder,
    /// The current epoch's rows in visiting order.
    rows: Tensor,
    n_rows: usize,
    position: usize,
    epoch: usize,
    steps: u64,
    steps_left: u64,
    seconds: f64,
}

enum Place {
    /// Not built yet: models are built as workers need them, so that only
    /// a bounded number of them are in memory at once.
    Pending(ModelSpec),
    Waiting(Box<Slot>),
    Running,
    Done(Box<TrainedModel>),
    Failed,
}

/// The group's models, how many are built and not yet finished, and how
/// many are not finished (built or not).
struct Board {
    places: Vec<Place>,
    alive: usize,
    unfinished: usize,
}

/// Memory the models in flight may take (parameters, gradients and
/// optimiser state); at least one model per worker is always allowed.
const MODEL_BUDGET_BYTES: usize = 2 << 30;

/// What the calling thread hears while a group trains.
pub enum GroupEvent<'a> {
    EpochDone,
    /// The model at this position of `specs` has finished.
    Finished(usize, &'a Trained),
}

/// Trains the models `specs` names (each with its report index) on
/// `workers` threads; `on_progress` hears of every finished epoch and model,
/// on the calling thread, and an error it returns stops the group (models
/// before the one it was told of still finish). Results come back in the
/// order of `specs`.
pub fn train_group(
    specs: &[(usize, ModelSpec)],
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    workers: usize,
    keep_networks: bool,
    on_progress: &mut dyn FnMut(GroupEvent) -> Result<()>,
) -> Result<Vec<TrainedModel>> {
    let steps = |spec: &ModelSpec| {
        let rows = match spec.refresh_fraction {
            None => data.n_train(),
            Some(fraction) => refresh_keep(data.n_train(), fraction),
        };
        rows.div_ceil(config.batch_size) as u64 * config.epochs as u64
    };
    let total: u64 = specs.iter().map(|(_, spec)| steps(spec)).sum();
    let workers = workers.clamp(1, specs.len().max(1));
    // Chunks small enough to balance the last models across workers, large
    // enough that handing them out costs nothing.
    let chunk = (total / (16 * workers as u64)).clamp(8, 512);
    let state_copies = match config.optimizer {
        OptimizerKind::Sgd if config.momentum != 0.0 => 3,
        OptimizerKind::Sgd => 2,
        OptimizerKind::Adam => 4,
    };
    let model_bytes = model_config.parameter_count(data.shape) * 4 * state_copies;
    let setup = Setup {
        model_config,
        config,
        shape: data.shape,
        n_train: data.n_train(),
        chunk,
        max_alive: (MODEL_BUDGET_BYTES / model_bytes.max(1)).max(workers),
        workers,
        indices: specs.iter().map(|(index, _)| *index).collect(),
        steps: specs.iter().map(|(_, spec)| steps(spec)).collect(),
        keep_networks,
    };
    let board = Mutex::new(Board {
        places: specs
            .iter()
            .map(|(_, spec)| Place::Pending(spec.clone()))
            .collect(),
        alive: 0,
        unfinished: specs.len(),
    });
    let init = Mutex::new(());
    let fill = set_fill_uninitialized(false);
    let failure: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel::<Note>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (board, init, failure, setup) = (&board, &init, &failure, &setup);
            let (train_x, train_y, test_x) = data.handles();
            scope.spawn(move || {
                tch::set_num_threads(1);
                let tensors = Tensors {
                    train_x,
                    train_y,
                    test_x,
                };
                worker(board, init, failure, &tensors, setup, &tx);
            });
        }
        drop(tx);
        for note in rx {
            let heard = match note {
                Note::EpochDone => on_progress(GroupEvent::EpochDone),
                Note::Finished(at) => {
                    let trained =
                        match &board.lock().expect("no worker panicked holding it").places[at] {
                            Place::Done(done) => done.result.clone(),
                            _ => unreachable!("a finished model stays done"),
                        };
                    on_progress(GroupEvent::Finished(at, &trained))
                }
            };
            if let Err(error) = heard {
                let at = match note {
                    Note::Finished(at) => at,
                    Note::EpochDone => 0,
                };
                fail(&failure, at, error);
            }
        }
    });
    set_fill_uninitialized(fill);
    if let Some((_, error)) = failure.into_inner().expect("no worker panicked holding it") {
        return Err(error);
    }
    board
        .into_inner()
        .expect("no worker panicked holding it")
        .places
        .into_iter()
        .map(|place| match place {
            Place::Done(trained) => Ok(*trained),
            _ => unreachable!("every model finished or the group failed"),
        })
        .collect()
}

/// What every worker needs to know about the group.
struct Setup<'a> {
    model_config: &'a ModelConfig,
    config: &'a TrainConfig,
    shape: Shape,
    n_train: usize,
    chunk: u64,
    max_alive: usize,
    workers: usize,
    indices: Vec<usize>,
    steps: Vec<u64>,
    /// Whether finished models keep their network (for --save-models).
    keep_networks: bool,
}

struct Tensors {
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
}

/// What a worker tells the calling thread.
#[derive(Clone, Copy)]
enum Note {
    EpochDone,
    Finished(usize),
}

/// What a worker does next.
enum Task {
    Build(usize, ModelSpec),
    Continue(usize, Box<Slot>),
}

fn worker(
    board: &Mutex<Board>,
    init: &Mutex<()>,
    failure: &Mutex<Option<(usize, Error)>>,
    data: &Tensors,
    setup: &Setup,
    notes: &mpsc::Sender<Note>,
) {
    loop {
        let task = {
            let mut board = board.lock().expect("no worker panicked holding it");
            // After a failure only the models before the failed one go on, so
            // that the failure reported is the first in model order, as the
            // sequential mode's (each model's own failure is deterministic).
            let cutoff = failure
                .lock()
                .expect("not poisoned")
                .as_ref()
                .map_or(usize::MAX, |(at, _)| *at);
            let waiting = board
                .places
                .iter()
                .enumerate()
                .filter_map(|(at, place)| match place {
                    Place::Waiting(slot) if at < cutoff => Some((at, slot.steps_left)),
                    _ => None,
                });
            let pending = (board.alive < setup.max_alive)
                .then(|| {
                    board
                        .places
                        .iter()
                        .position(|place| matches!(place, Place::Pending(_)))
                })
                .flatten()
                .filter(|&at| at < cutoff);
            let (waiting, pending) = if board.unfinished >= 2 * setup.workers {
                // In order: the waiting model furthest along, else the next.
                let waiting = waiting.min_by_key(|&(at, left)| (left, at));
                (waiting, pending.filter(|_| waiting.is_none()))
            } else {
                // The last few share the workers: the waiting model with the
                // most steps left, unless a model not yet built has more.
                let waiting = waiting.max_by_key(|&(at, left)| (left, std::cmp::Reverse(at)));
                let pending =
                    pending.filter(|&at| waiting.is_none_or(|(_, left)| setup.steps[at] > left));
                (waiting, pending)
            };
            match (pending, waiting) {
                (Some(at), _) => {
                    board.alive += 1;
                    let Place::Pending(spec) =
                        std::mem::replace(&mut board.places[at], Place::Running)
                    else {
                        unreachable!()
                    };
                    Task::Build(at, spec)
                }
                (None, Some((at, _))) => {
                    let Place::Waiting(slot) =
                        std::mem::replace(&mut board.places[at], Place::Running)
                    else {
                        unreachable!()
                    };
                    Task::Continue(at, slot)
                }
                (None, None) => return,
            }
        };
        let started = Instant::now();
        let (at, outcome) = match task {
            Task::Build(at, spec) => {
                // Initialisation draws from libtorch's global generator: one model at a time.
                let _serial = init.lock().expect("not poisoned");
                (at, build(at, &spec, setup).map(Box::new))
            }
            Task::Continue(at, mut slot) => {
                let outcome = run_chunk(&mut slot, data, setup.config, setup.chunk, notes);
                (at, outcome.map(|()| slot))
            }
        };
        let place = match outcome {
            Ok(mut slot) => {
                slot.seconds += started.elapsed().as_secs_f64();
                if slot.steps_left > 0 {
                    Place::Waiting(slot)
                } else {
                    match finish(*slot, data, setup.keep_networks) {
                        Ok(trained) => Place::Done(Box::new(trained)),
                        Err(error) => fail(failure, at, error),
                    }
                }
            }
            Err(error) => fail(failure, at, error),
        };
        let finished = matches!(place, Place::Done(_));
        let mut board = board.lock().expect("no worker panicked holding it");
        if !matches!(place, Place::Waiting(_)) {
            board.alive -= 1;
            board.unfinished -= 1;
        }
        board.places[at] = place;
        drop(board);
        if finished {
            // A closed receiver only means nobody listens any more.
            let _ = notes.send(Note::Finished(at));
        }
    }
}

fn build(at: usize, spec: &ModelSpec, setup: &Setup) -> Result<Slot> {
    let model = FusedMlp::new(spec, setup.shape, setup.model_config, setup.config)?;
    let mut order = DataOrder::new(spec, setup.n_train);
    let (rows, n_rows) = epoch_rows(&mut order)?;
    Ok(Slot {
        index: setup.indices[at],
        model,
        order,
        rows,
        n_rows,
        position: 0,
        epoch: 0,
        steps: 0,
        steps_left: setup.steps[at],
        seconds: 0.0,
    })
}

/// Records model `at`'s failure, keeping the first in model order.
fn fail(failure: &Mutex<Option<(usize, Error)>>, at: usize, error: Error) -> Place {
    let mut first = failure.lock().expect("not poisoned");
    if first.as_ref().is_none_or(|(earlier, _)| at < *earlier) {
        *first = Some((at, error));
    }
    Place::Failed
}

/// Up to `chunk` steps of one model, crossing epoch boundaries as they come.
fn run_chunk(
    slot: &mut Slot,
    data: &Tensors,
    config: &TrainConfig,
    chunk: u64,
    notes: &mpsc::Sender<Note>,
) -> Result<()> {
    for _ in 0..chunk.min(slot.steps_left) {
        let size = config.batch_size.min(slot.n_rows - slot.position);
        let rows = slot.rows.f_narrow(0, slot.position as i64, size as i64)?;
        let xs = data.train_x.f_index_select(0, &rows)?;
        let ys = data.train_y.f_index_select(0, &rows)?;
        slot.position += size;
        let last_of_epoch = slot.position == slot.n_rows;
        let loss = slot.model.step(&xs, &ys, last_of_epoch)?;
        slot.steps += 1;
        slot.steps_left -= 1;
        if last_of_epoch {
            // As the sequential path: the epoch's last loss must be finite.
            if let Some(value) = loss.0.filter(|v| !v.is_finite()) {
                return Err(Error::Training {
                    model: slot.index,
                    step: slot.steps,
                    message: format!("loss became {value}"),
                });
            }
            slot.epoch += 1;
            // The progress bar counts epochs; a closed receiver only means
            // nobody listens any more.
            let _ = notes.send(Note::EpochDone);
            if slot.steps_left > 0 {
                let (rows, n_rows) = epoch_rows(&mut slot.order)?;
                slot.rows = rows;
                slot.n_rows = n_rows;
                slot.position = 0;
            }
        }
    }
    Ok(())
}

fn epoch_rows(order: &mut DataOrder) -> Result<(Tensor, usize)> {
    let rows: Vec<i64> = order.next_epoch().into_iter().map(i64::from).collect();
    Ok((Tensor::f_from_slice(&rows)?, rows.len()))
}

/// The finished model's results; its network only when kept (to be saved):
/// otherwise its parameters are freed now, not when the group ends.
fn finish(slot: Slot, data: &Tensors, keep_network: bool) -> Result<TrainedModel> {
    let started = Instant::now();
    let test_logits = slot.model.logits(&data.test_x)?;
    Ok(TrainedModel {
        result: Trained {
            predictions_sha256: logits_sha256(&test_logits),
            test_logits,
            weights_sha256: slot.model.weights_sha256()?,
            data_order_sha256: slot.order.sha256(),
            steps: slot.steps,
            seconds: slot.seconds + started.elapsed().as_secs_f64(),
            execution: "parallel".into(),
        },
        network: keep_network.then(|| slot.model.into_network()),
    })
}
