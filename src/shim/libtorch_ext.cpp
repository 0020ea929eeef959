// What churn-audit needs from libtorch that tch does not expose: the
// determinism switches, and generator objects so that each model draws its
// dropout masks from a stream of its own instead of libtorch's one global
// generator (which models trained side by side would otherwise share).
// Functions return 0 on success and 1 if libtorch threw (the message is lost:
// callers say which call failed).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

extern "C" {

int churn_audit_set_deterministic(int enabled) {
    try {
        at::globalContext().setDeterministicAlgorithms(enabled != 0, /*warn_only=*/false);
        at::globalContext().setDeterministicCuDNN(enabled != 0);
        // cuDNN autotuning picks kernels by timing, so it must be off too.
        at::globalContext().setBenchmarkCuDNN(false);
        return 0;
    } catch (...) {
        return 1;
    }
}

// Whether deterministic mode fills every new tensor's memory with NaN before a
// kernel overwrites it (a guard against kernels that read uninitialised
// memory); returns the previous setting.
int churn_audit_set_fill_uninitialized(int enabled) {
    bool previous = at::globalContext().deterministicFillUninitializedMemory();
    at::globalContext().setDeterministicFillUninitializedMemory(enabled != 0);
    return previous ? 1 : 0;
}

int churn_audit_deterministic_algorithms() {
    return at::globalContext().deterministicAlgorithms() && at::globalContext().deterministicCuDNN() ? 1 : 0;
}

// A CPU generator in the state torch::manual_seed(seed) leaves the global one in.
void *churn_audit_generator_new(uint64_t seed) {
    try {
        return new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed));
    } catch (...) {
        return nullptr;
    }
}

void churn_audit_generator_free(void *generator) {
    delete static_cast<at::Generator *>(generator);
}

// at::dropout's CPU path (noise = bernoulli(1 - p), scaled by 1 / (1 - p),
// times the input), with the noise drawn from `generator`: on CPU the result is
// bitwise what at::dropout gives after manual_seed. The noise is drawn on the
// CPU and moved to the input's device, so the stream does not depend on it.
int churn_audit_dropout(const at::Tensor *input, double p, void *generator, at::Tensor **out) {
    try {
        at::Tensor noise = at::empty(input->sizes(), input->options().device(at::kCPU));
        noise.bernoulli_(1 - p, *static_cast<at::Generator *>(generator));
        noise.div_(1 - p);
        *out = new at::Tensor(*input * noise.to(input->device()));
        return 0;
    } catch (...) {
        return 1;
    }
}

}

extern "C" {

// One parameter's update, as torch::optim::SGD::step does it (dampening 0,
// no weight decay, no Nesterov: the options churn-audit builds): on the first
// step the momentum buffer becomes a copy of the gradient, later
// buf = momentum * buf + grad; then param -= lr * buf. The same ATen calls
// with the same scalars, so the same bits as the optimizer the sequential
// path uses.
int churn_audit_sgd_step(const at::Tensor *param, const at::Tensor *grad, const at::Tensor *buf,
                         double lr, double momentum, int first) {
    try {
        if (momentum != 0) {
            if (first) {
                buf->copy_(*grad);
            } else {
                buf->mul_(momentum).add_(*grad, 1 - 0.0);
            }
            param->add_(*buf, -1 * lr);
        } else {
            param->add_(*grad, -1 * lr);
        }
        return 0;
    } catch (...) {
        return 1;
    }
}

// One parameter's update, as torch::optim::Adam::step does it (no weight
// decay, no AMSGrad); `step` counts this update, starting at 1.
int churn_audit_adam_step(const at::Tensor *param, const at::Tensor *grad, const at::Tensor *exp_avg,
                          const at::Tensor *exp_avg_sq, int64_t step, double lr, double beta1,
                          double beta2, double eps) {
    try {
        auto bias_correction1 = 1 - std::pow(beta1, step);
        auto bias_correction2 = 1 - std::pow(beta2, step);
        exp_avg->mul_(beta1).add_(*grad, 1 - beta1);
        exp_avg_sq->mul_(beta2).addcmul_(*grad, *grad, 1 - beta2);
        at::Tensor denom = (exp_avg_sq->sqrt() / std::sqrt(bias_correction2)).add_(eps);
        auto step_size = lr / bias_correction1;
        param->addcdiv_(*exp_avg, denom, -step_size);
        return 0;
    } catch (...) {
        return 1;
    }
}

}
