"""Data-parallel throughput: training samples/s with 1 and 2 Horovod ranks on this machine.

Runs :mod:`ednn.parallel.check` (image-mode EDNN on periodic Ising configurations)
three ways, with the same global batch:

* ``serial-1t``: one process, 1 TF thread      (the per-core baseline)
* ``serial-Nt``: one process, N TF threads      (one process using the whole machine)
* ``horovod-N``: ``horovodrun -np N --gloo``, 1 TF thread per rank

Scaling efficiency = samples/s(horovod-N) / (N * samples/s(serial-1t)). CPU efficiency = samples per CPU-second of all ranks
(horovod-N) / the same for serial-1t: the work Horovod adds, robust to other jobs
sharing the machine (wall-clock figures are not). The first epoch
(tracing) is excluded. Writes experiments/results/bench_horovod.json and .png.

    python experiments/bench_horovod.py [--ranks 2] [--image 32] [--n-train 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOROVOD_", "OMPI_", "PMI_", "MV2_", "SLURM_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    return env


def _run(cmd: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(p.stdout + p.stderr)[-3000:]}")
    for line in p.stdout.splitlines():
        line = line.split("<stdout>:", 1)[-1].strip()  # horovodrun prefixes "[0]<stdout>:"
        if line.startswith("{") and "samples_per_s" in line:
            res = json.loads(line)
            res["wall_s"] = wall
            return res
    raise RuntimeError(f"no benchmark line in output of {' '.join(cmd)}:\n{p.stdout[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="bench_horovod")
    a = ap.parse_args()

    common = ["--out", "", "--bench", "--epochs", str(a.epochs), "--n-train", str(a.n_train),
              "--n-val", "0", "--image", str(a.image), "--batch", str(a.batch), "--layers",
              str(a.layers), "--filters", str(a.filters), "--seed", "0"]
    check = [sys.executable, "-m", "ednn.parallel.check"]
    hvd = [str(Path(sys.executable).parent / "horovodrun"), "-np", str(a.ranks), "-H",
           f"localhost:{a.ranks}", "--gloo", "--start-timeout", "120"]
    configs = {
        "serial-1t": check + ["--backend", "serial", "--threads", "1"],
        f"serial-{a.ranks}t": check + ["--backend", "serial", "--threads", str(a.ranks)],
        f"horovod-{a.ranks}": hvd + check + ["--threads", "1"],
    }
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    tmp = ROOT / "runs" / "bench_horovod"
    load0 = os.getloadavg()
    for rep in range(a.repeats):
        for name, cmd in configs.items():
            args = list(common)
            args[1] = str(tmp / f"{name}-{rep}")
            res = _run(cmd + args, timeout=600)
            runs[name].append(res)
            print(f"{name:12s} rep {rep}: {res['samples_per_s']:8.1f} samples/s "
                  f"(epochs {' '.join(f'{t:.2f}' for t in res['epoch_s'])} s)", flush=True)
    best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
    median = {k: float(np.median([r["samples_per_s"] for r in v])) for k, v in runs.items()}
    per_cpu = {k: float(np.median([r["samples_per_cpu_s"] for r in v])) for k, v in runs.items()}
    n = a.ranks
    eff_core = best[f"horovod-{n}"] / (n * best["serial-1t"])
    speedup_vs_threads = best[f"horovod-{n}"] / best[f"serial-{n}t"]
    out = {
        "what": "training samples/s, image-mode EDNN (Ising), Horovod Gloo on CPU, same global batch",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load0, "loadavg_after": os.getloadavg()},
        "settings": vars(a),
        "runs": runs,
        "best_samples_per_s": best,
        "median_samples_per_s": median,
        "median_samples_per_cpu_s": per_cpu,
        "cpu_efficiency": per_cpu[f"horovod-{n}"] / per_cpu["serial-1t"],
        "speedup_vs_1_thread": best[f"horovod-{n}"] / best["serial-1t"],
        "scaling_efficiency_per_core": eff_core,
        "speedup_vs_one_process_all_threads": speedup_vs_threads,
        "note": "best of repeats; machine shared with other jobs (see loadavg), so figures are noisy",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / f"{a.tag}.json"
    tmpj = jpath.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps(out, indent=1))
    os.replace(tmpj, jpath)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ednn.plots import save_fig

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    names = list(best)
    vals = [best[k] for k in names]
    bars = ax.bar(names, vals, color=["#8da0cb", "#66c2a5", "#fc8d62"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom")
    ax.axhline(n * best["serial-1t"], ls="--", color="gray", lw=1, label=f"ideal {n} x serial-1t")
    ax.set_ylabel("training samples / s")
    cpu_eff = per_cpu[f"horovod-{n}"] / per_cpu["serial-1t"]
    ax.set_title(f"Horovod Gloo, {n} ranks: wall efficiency {100 * eff_core:.0f}% per core,\n"
                 f"CPU efficiency {100 * cpu_eff:.0f}% (load avg {load0[0]:.1f} on {os.cpu_count()} cores)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    ppath = RESULTS / f"{a.tag}.png"
    save_fig(fig, ppath)
    print(json.dumps({"best_samples_per_s": best, "median_samples_per_cpu_s": per_cpu,
                      "cpu_efficiency": per_cpu[f"horovod-{n}"] / per_cpu["serial-1t"],
                      "scaling_efficiency_per_core": eff_core,
                      "speedup_vs_one_process_all_threads": speedup_vs_threads}, indent=1))
    print(f"wrote {jpath} and {ppath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
