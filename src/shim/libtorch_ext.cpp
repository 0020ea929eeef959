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
