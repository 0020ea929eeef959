"""PyTorch references for bench/run: the same training as churn-audit, one
model at a time (eager) and all N models at once (batched ensemble), plus the
machine's fp32 matmul peak through libtorch.

Runs with the torch that scripts/setup installs (PYTHONPATH=<cache>/site).
Prints one JSON object on stdout.
"""

import argparse
import gzip
import json
import resource
import struct
import time

import torch


def load_fashion(directory):
    def idx(name):
        with gzip.open(f"{directory}/{name}", "rb") as f:
            data = f.read()
        magic, count = struct.unpack(">II", data[:8])
        if magic == 2051:
            rows, cols = struct.unpack(">II", data[8:16])
            return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(count, rows * cols).float() / 255.0
        return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).long()

    return idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")


def load_digits(path, rows):
    """The first `rows` images: the same amount of work per epoch as
    churn-audit's 80% training split (which rows they are does not matter
    for speed)."""
    lines = gzip.open(path, "rt").read().split()[:rows]
    data = torch.tensor([list(map(int, line.split(","))) for line in lines])
    return data[:, :64].float() / 16.0, data[:, 64].long()


def eager(x, y, n_models, hidden, dropout, optimizer, lr, epochs, batch):
    n, d = x.shape
    classes = int(y.max()) + 1
    start = time.perf_counter()
    for k in range(n_models):
        torch.manual_seed(k)
        model = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, classes)
        )
        opt = make_optimizer(optimizer, model.parameters(), lr)
        for _ in range(epochs):
            order = torch.randperm(n)
            for i in range(0, n, batch):
                rows = order[i : i + batch]
                loss = torch.nn.functional.cross_entropy(model(x.index_select(0, rows)), y.index_select(0, rows))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return time.perf_counter() - start


def ensemble(x, y, n_models, hidden, dropout, optimizer, lr, epochs, batch):
    """All models in one set of batched matmuls; each keeps its own data order."""
    n, d = x.shape
    classes = int(y.max()) + 1
    torch.manual_seed(0)
    bound1, bound2 = 1 / d**0.5, 1 / hidden**0.5
    w1 = (torch.rand(n_models, d, hidden) * 2 - 1).mul_(bound1).requires_grad_()
    b1 = (torch.rand(n_models, 1, hidden) * 2 - 1).mul_(bound1).requires_grad_()
    w2 = (torch.rand(n_models, hidden, classes) * 2 - 1).mul_(bound2).requires_grad_()
    b2 = (torch.rand(n_models, 1, classes) * 2 - 1).mul_(bound2).requires_grad_()
    opt = make_optimizer(optimizer, [w1, b1, w2, b2], lr)
    start = time.perf_counter()
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(n) for _ in range(n_models)])
        for i in range(0, n, batch):
            rows = orders[:, i : i + batch]
            xs = x[rows]
            ys = y[rows]
            h = torch.nn.functional.dropout(torch.relu(torch.baddbmm(b1, xs, w1)), dropout, True)
            logits = torch.baddbmm(b2, h, w2)
            # Sum over models of each model's mean loss: the same gradients as N separate steps.
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, classes), ys.reshape(-1)) * n_models
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def make_optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def matmul_peak(size=2048, repeats=10):
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--fashion-dir", required=True)
    parser.add_argument("--digits", required=True)
    parser.add_argument("--digits-rows", type=int, default=1438)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="keep the fastest of this many runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    fx, fy = load_fashion(args.fashion_dir)
    dx, dy = load_digits(args.digits, args.digits_rows)
    fashion = dict(hidden=256, dropout=0.2, optimizer="sgd", lr=0.05, epochs=2, batch=128)
    digits = dict(hidden=128, dropout=0.2, optimizer="adam", lr=0.001, epochs=20, batch=32)
    result = {"threads": args.threads, "torch": torch.__version__,
              # A limit: the best of a few short trials, so one interruption does not lower it.
              "matmul_gflops": max(matmul_peak() for _ in range(max(3, args.repeat)))}
    for name, (x, y, cfg) in {"fashion-mnist": (fx, fy, fashion), "digits": (dx, dy, digits)}.items():
        work = args.models * cfg["epochs"]
        result[name] = {
            "train_examples": x.shape[0],
            "eager_models_epochs_per_s": work / min(eager(x, y, args.models, **cfg) for _ in range(args.repeat)),
            "ensemble_models_epochs_per_s": work / min(ensemble(x, y, args.models, **cfg) for _ in range(args.repeat)),
        }
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
