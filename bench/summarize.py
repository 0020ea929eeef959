"""Turns one bench/run's measurements into the printed table and a JSON record."""

import glob
import json
import sys

work, out = sys.argv[1], sys.argv[2]
reference = json.load(open(f"{work}/reference.json"))
peak = reference["matmul_gflops"]
rows = []
for case in ("fashion-mnist", "digits"):
    for suffix in ("", "-sequential"):
        name = ("fashion" if case == "fashion-mnist" else "digits") + suffix
        # The fastest of the repeats (BENCH_REPEAT), and the largest peak RSS.
        reports = [json.load(open(path)) for path in sorted(glob.glob(f"{work}/{name}.[0-9]*.json"))]
        report = min(reports, key=lambda r: r["execution"].get("train_seconds")
                     or sum(m["train_seconds"] for m in r["models"]))
        rss_mib = max(int(open(path).read().split()[-1]) for path in glob.glob(f"{work}/{name}.[0-9]*.rss")) / 1024
        config = report["config"]
        epochs = config["train"]["epochs"]
        models = len(report["models"])
        execution = report["execution"]
        # Training time only (the wall clock of the training, models of a
        # parallel group overlapping), as the reference times only its loops.
        seconds = execution.get("train_seconds") or sum(m["train_seconds"] for m in report["models"])
        rate = models * epochs / seconds
        widths = [report["dataset"]["n_features"], *config["model"]["hidden"], report["dataset"]["n_classes"]]
        layer_macs = [a * b for a, b in zip(widths, widths[1:])]
        # The matrix products a training step really computes, 2 FLOPs per
        # multiply-add: every layer's forward product and weight gradient, and
        # the input gradient of every layer but the first (the data needs none).
        # The common 6-per-multiply-add rule would count that one too and
        # flatter the share of peak by half again on the Fashion-MNIST MLP.
        flops_per_example = 2 * (2 * sum(layer_macs) + sum(layer_macs[1:]))
        gflops = rate * report["dataset"]["n_train"] * flops_per_example / 1e9
        ref = reference[case]
        rows.append({
            "case": case,
            "mode": execution["mode"],
            "default": suffix == "",
            "churn_audit_models_epochs_per_s": rate,
            "pytorch_eager_models_epochs_per_s": ref["eager_models_epochs_per_s"],
            "pytorch_ensemble_models_epochs_per_s": ref["ensemble_models_epochs_per_s"],
            "ratio_vs_eager": rate / ref["eager_models_epochs_per_s"],
            "ratio_vs_ensemble": rate / ref["ensemble_models_epochs_per_s"],
            "gflops": gflops,
            "share_of_matmul_peak": gflops / peak,
            "churn_audit_peak_rss_mib": rss_mib,
        })

print(f"threads {reference['threads']}, best of {len(reports)}, torch {reference['torch']}, fp32 matmul peak {peak:.0f} GFLOP/s, "
      f"reference peak RSS {reference['peak_rss_mib']:.0f} MiB")
print(f"{'case':<14}{'mode':<12}{'churn-audit':>12}{'eager':>9}{'ensemble':>10}{'x eager':>9}{'x ens.':>8}"
      f"{'GFLOP/s':>9}{'% peak':>8}{'RSS MiB':>9}")
for r in rows:
    mode = r["mode"] + ("" if r["default"] else "*")
    print(f"{r['case']:<14}{mode:<12}{r['churn_audit_models_epochs_per_s']:>12.2f}"
          f"{r['pytorch_eager_models_epochs_per_s']:>9.2f}{r['pytorch_ensemble_models_epochs_per_s']:>10.2f}"
          f"{r['ratio_vs_eager']:>9.2f}{r['ratio_vs_ensemble']:>8.2f}"
          f"{r['gflops']:>9.1f}{100 * r['share_of_matmul_peak']:>8.1f}{r['churn_audit_peak_rss_mib']:>9.0f}")
print("(rates in models·epochs per second; mode: the default, auto; * --execution sequential)")
json.dump({"reference": reference, "cases": rows}, open(out, "w"), indent=2)
print(f"written {out}")
