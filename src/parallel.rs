//! The parallel execution mode: the models of a group train side by side on
//! worker threads, each model computing on one thread (libtorch intra-op
//! threads = 1) with the fused engine (src/fused.rs). Every model owns its
//! parameters, optimiser state, dropout generator and data-order stream, so
//! what it computes does not depend on which worker runs it, when, or next
//! to which other models: a model is bitwise the same whatever the number
//! of workers or models, and bitwise the sequential path's with `--threads 1`.
//!
//! Scheduling: work is handed out in chunks of steps; a free worker takes
//! the waiting model with the most steps left (so that no model is left to
//! finish alone), runs a chunk, and puts it back. Models therefore migrate
//! between workers, and N = 5 models on 2 workers keep both busy to the end.
//! Initialisation draws from libtorch's global generator, so every model is
//! built up front on the calling thread, one after another.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::data::hex;
use crate::error::{Error, Result};
use crate::fused::FusedMlp;
use crate::libtorch::set_fill_uninitialized;
use crate::model::ModelConfig;
use crate::train::{DataOrder, ModelSpec, TrainConfig, TrainData, Trained, TrainedModel};

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
    Waiting(Box<Slot>),
    Running,
    Done(Box<TrainedModel>),
    Failed,
}

/// Trains the models `specs` names (each with its report index) on
/// `workers` threads; `on_epoch` hears of every finished epoch, on the
/// calling thread. Results come back in the order of `specs`.
pub fn train_group(
    specs: &[(usize, ModelSpec)],
    data: &TrainData,
    model_config: &ModelConfig,
    config: &TrainConfig,
    workers: usize,
    on_epoch: &mut dyn FnMut(),
) -> Result<Vec<TrainedModel>> {
    let mut places = Vec::with_capacity(specs.len());
    for (index, spec) in specs {
        let started = Instant::now();
        let model = FusedMlp::new(spec, data.shape, model_config, config)?;
        let mut order = DataOrder::new(spec, data.n_train());
        let (rows, n_rows) = epoch_rows(&mut order)?;
        let steps_per_epoch = n_rows.div_ceil(config.batch_size) as u64;
        places.push(Place::Waiting(Box::new(Slot {
            index: *index,
            model,
            order,
            rows,
            n_rows,
            position: 0,
            epoch: 0,
            steps: 0,
            steps_left: steps_per_epoch * config.epochs as u64,
            seconds: started.elapsed().as_secs_f64(),
        })));
    }
    let total: u64 = places
        .iter()
        .map(|p| match p {
            Place::Waiting(slot) => slot.steps_left,
            _ => 0,
        })
        .sum();
    let workers = workers.clamp(1, specs.len().max(1));
    // Chunks small enough to balance the last models across workers, large
    // enough that handing them out costs nothing.
    let chunk = (total / (16 * workers as u64)).clamp(8, 512);
    let places = Mutex::new(places);
    let fill = set_fill_uninitialized(false);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (places, failure) = (&places, &failure);
            let (train_x, train_y, test_x) = data.handles();
            scope.spawn(move || {
                tch::set_num_threads(1);
                let tensors = Tensors {
                    train_x,
                    train_y,
                    test_x,
                };
                worker(places, failure, &tensors, config, chunk, &tx);
            });
        }
        drop(tx);
        for () in rx {
            on_epoch();
        }
    });
    set_fill_uninitialized(fill);
    if let Some(error) = failure.into_inner().expect("no worker panicked holding it") {
        return Err(error);
    }
    places
        .into_inner()
        .expect("no worker panicked holding it")
        .into_iter()
        .map(|place| match place {
            Place::Done(trained) => Ok(*trained),
            _ => unreachable!("every model finished or the group failed"),
        })
        .collect()
}

struct Tensors {
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
}

fn worker(
    places: &Mutex<Vec<Place>>,
    failure: &Mutex<Option<Error>>,
    data: &Tensors,
    config: &TrainConfig,
    chunk: u64,
    epoch_done: &mpsc::Sender<()>,
) {
    loop {
        let (at, mut slot) = {
            let mut places = places.lock().expect("no worker panicked holding it");
            if failure.lock().expect("not poisoned").is_some() {
                return;
            }
            let next = places
                .iter()
                .enumerate()
                .filter_map(|(at, place)| match place {
                    Place::Waiting(slot) => Some((at, slot.steps_left)),
                    _ => None,
                })
                .max_by_key(|&(at, left)| (left, std::cmp::Reverse(at)));
            let Some((at, _)) = next else {
                return;
            };
            let Place::Waiting(slot) = std::mem::replace(&mut places[at], Place::Running) else {
                unreachable!()
            };
            (at, slot)
        };
        let started = Instant::now();
        let outcome = run_chunk(&mut slot, data, config, chunk, epoch_done);
        slot.seconds += started.elapsed().as_secs_f64();
        let place = match outcome {
            Ok(()) if slot.steps_left > 0 => Place::Waiting(slot),
            Ok(()) => match finish(*slot, data) {
                Ok(trained) => Place::Done(Box::new(trained)),
                Err(error) => fail(failure, error),
            },
            Err(error) => fail(failure, error),
        };
        places.lock().expect("no worker panicked holding it")[at] = place;
    }
}

fn fail(failure: &Mutex<Option<Error>>, error: Error) -> Place {
    failure.lock().expect("not poisoned").get_or_insert(error);
    Place::Failed
}

/// Up to `chunk` steps of one model, crossing epoch boundaries as they come.
fn run_chunk(
    slot: &mut Slot,
    data: &Tensors,
    config: &TrainConfig,
    chunk: u64,
    epoch_done: &mpsc::Sender<()>,
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
            let _ = epoch_done.send(());
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

fn finish(slot: Slot, data: &Tensors) -> Result<TrainedModel> {
    let started = Instant::now();
    let test_logits = slot.model.logits(&data.test_x)?;
    let bytes: Vec<u8> = test_logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(TrainedModel {
        result: Trained {
            predictions_sha256: hex(&Sha256::digest(&bytes)),
            test_logits,
            weights_sha256: slot.model.weights_sha256()?,
            data_order_sha256: slot.order.sha256(),
            steps: slot.steps,
            seconds: slot.seconds + started.elapsed().as_secs_f64(),
            execution: "parallel".into(),
        },
        network: slot.model.into_network(),
    })
}
