// libtorch's determinism switches, which tch does not expose.
// Each returns 0 on success and 1 if libtorch refused (the message is lost:
// callers report which switch failed).
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

}
