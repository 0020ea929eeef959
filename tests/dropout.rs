//! A model's own dropout generator draws exactly the masks libtorch's global
//! generator draws after `manual_seed`: the guarantee that kept every model
//! bitwise the same when generators became per model. Alone in its own test
//! binary, because the global generator is shared by every test thread.

use churn_audit::libtorch::Generator;
use tch::{Device, Kind, Tensor};

#[test]
fn generator_dropout_matches_libtorch_after_manual_seed() {
    let input = Tensor::ones([64, 33], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    tch::manual_seed(42);
    let libtorch = input.dropout(0.25, true);
    let ours = Generator::new(42).unwrap().dropout(&input, 0.25).unwrap();
    assert!(ours.equal(&libtorch));
    // Kept units scale to 1 / 0.75, dropped ones are 0.
    let kept = ours.ne(0.0).sum(Kind::Int64).int64_value(&[]);
    assert!((1200..1970).contains(&kept), "{kept} of 2112 kept");
    assert!(ours.max().double_value(&[]) - 1.0 / 0.75 < 1e-6);
}
