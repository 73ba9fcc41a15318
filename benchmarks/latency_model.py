"""How well does the XGBoost latency model predict real kernels, and how far is the sum of kernels from a model?

    python benchmarks/latency_model.py [--models NAME ...] [--cache PATH] [--out benchmarks/results]

For every zoo model (batch 1) on this host (registry target "x86", LocalRunner, default MeasureConfig):

1. every distinct fused fp32 kernel is measured (through the latency cache: a rerun measures nothing);
2. the latency model is fitted on all of them: its 5-fold cross-validated error is the number
   `LatencyTable.model["error"]` reports;
3. leave-one-model-out: each model's kernels predicted by a model fitted on the other models' kernels
   only (the honest number for a model never measured before);
4. the whole model is measured end to end (`measure_model`) and compared with the sum of its sites'
   kernel latencies: the gap is what `fit_correction` corrects in the compile loop.

Writes benchmarks/results/latency_model.json and .md with this command line and the load average.
Timings on a shared machine are noisy; the medians of 10 repeats of >= 10 ms each are what we have.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv=None) -> int:
    from tvm_tqs.graph import fuse, fused_ops
    from tvm_tqs.latency import (
        LatencyCache,
        LatencyModel,
        MeasureConfig,
        measure_kernels,
        measure_model,
        site_jobs,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="zoo model names (default: all)")
    parser.add_argument("--cache", default=None, help="latency cache file (default: the user cache)")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    paths = sorted((REPO / "benchmarks" / "zoo" / "models").glob("*.onnx"))
    if args.models:
        paths = [p for p in paths if p.stem in args.models]
    cache = LatencyCache(args.cache)
    config = MeasureConfig()
    per_model, rows = [], []
    t_start = time.time()
    for path in paths:
        t0 = time.time()
        mod = fuse(str(path), {"batch": 1})
        ops = fused_ops(mod)
        jobs = site_jobs(mod, "x86", ops=ops)
        unique = list({j.key(config): j for j in jobs.values()}.values())
        ms = {m.key: m for m in measure_kernels(unique, "local", config, cache)}
        ok = [m for m in ms.values() if m.ok]
        rows += [(path.stem, m) for m in ok]
        site_sum = sum(ms[jobs[op.index].key(config)].median_ms for op in ops)
        e2e = measure_model(mod, "local", config=config)
        per_model.append(
            {
                "model": path.stem,
                "sites": len(ops),
                "kernels": len(unique),
                "failed": len(unique) - len(ok),
                "sum_of_sites_ms": site_sum,
                "end_to_end_ms": e2e.median_ms,
                "end_to_end_iqr_ms": e2e.iqr_ms,
                "ratio": e2e.median_ms / site_sum,
                "seconds": time.time() - t0,
            }
        )
        print(
            f"{path.stem}: {len(unique)} kernels, sum {site_sum:.4f} ms, e2e {e2e.median_ms:.4f} ms",
            flush=True,
        )

    feats = [m.features for _, m in rows]
    lat = [m.median_ms for _, m in rows]
    model = LatencyModel(seed=0).fit(feats, lat)
    lomo, all_ape = [], []
    for name in sorted({n for n, _ in rows}):
        train = [(f, t) for (n, _), f, t in zip(rows, feats, lat, strict=True) if n != name]
        test = [(f, t) for (n, _), f, t in zip(rows, feats, lat, strict=True) if n == name]
        fitted = LatencyModel(seed=0).fit([f for f, _ in train], [t for _, t in train], cross_validate=False)
        ape = np.abs(fitted.predict([f for f, _ in test]) / np.array([t for _, t in test]) - 1)
        all_ape += list(ape)
        lomo.append(
            {"model": name, "n": len(test), "mdape": float(np.median(ape)), "mape": float(np.mean(ape))}
        )
    command = "python " + " ".join(
        [os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:])
    )
    payload = {
        "command": command,
        "host": platform.node(),
        "load_avg": os.getloadavg(),
        "seconds": time.time() - t_start,
        "n_kernels": len(rows),
        "cv_error": model.error.to_dict() if model.error else None,
        "leave_one_model_out": {
            "mdape": float(np.median(all_ape)),
            "mape": float(np.mean(all_ape)),
            "per_model": lomo,
        },
        "models": per_model,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency_model.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# Latency model error on the zoo's fp32 kernels (x86 host)",
        "",
        f"`{command}`",
        "",
        f"{len(rows)} distinct kernels, load average {payload['load_avg'][0]:.2f}.",
        "",
        f"- 5-fold CV: {model.error}",
        f"- leave-one-model-out: MdAPE {100 * payload['leave_one_model_out']['mdape']:.1f}%, "
        f"mean APE {100 * payload['leave_one_model_out']['mape']:.1f}%",
        "",
        "| model | sites | kernels | LOMO MdAPE | sum of sites (ms) | end to end (ms) | e2e / sum |",
        "|---|---|---|---|---|---|---|",
    ]
    lomo_by = {lo["model"]: lo for lo in lomo}
    for pm in per_model:
        lo = lomo_by.get(pm["model"], {"mdape": float("nan")})
        lines.append(
            f"| {pm['model']} | {pm['sites']} | {pm['kernels']} | {100 * lo['mdape']:.0f}% | "
            f"{pm['sum_of_sites_ms']:.4f} | {pm['end_to_end_ms']:.4f} | {pm['ratio']:.2f} |"
        )
    (out / "latency_model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
