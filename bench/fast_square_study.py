"""Study for the ``fast`` preset's Square stage: which of the points that survive its white-box
stages does a full Square (5000 queries, AutoAttack's schedule) break, how close were they
(rank by the DLR-normalised margin, 0 = closest), and after how many queries.

Runs ``fast`` without Square (APGD-CE, MALT APGD-T) on the images, then Square on EVERY
survivor. Meant for images that are not the benchmark's (default: test images 1000 onwards),
to choose the Square stage's settings before any benchmark run.

Usage: python bench/fast_square_study.py --models trades,lenet,cifar --start 1000 --n 200
       [--lenet-run DIR] [--cifar-run DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_eval import SHARED, load_models  # noqa: E402
from machine import machine_info, machine_line  # noqa: E402

from robustlab.attacks.fast import FastAttack  # noqa: E402
from robustlab.attacks.square import Square  # noqa: E402
from robustlab.data import load_split  # noqa: E402
from robustlab.io import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="trades,lenet,cifar")
    ap.add_argument("--start", type=int, default=1000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--lenet-run", default="runs/mnist-lenet-pgdat")
    ap.add_argument("--cifar-run", default="runs/cifar-pgdat")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--data-dir", default=str(SHARED / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "fast_square_study.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    info = machine_info()
    print(machine_line(info), flush=True)
    out: dict = {"benchmark": "fast_square_study", "args": vars(args), "machine": info}
    out["models"] = []
    for label, model, dataset, eps in load_models(args):
        model = model.eval().to(memory_format=torch.channels_last)
        sp = load_split(dataset, "test", root=args.data_dir)
        sl = slice(args.start, args.start + args.n)
        x, y = sp.images[sl].float() / 255.0, sp.labels[sl].long()
        x = x.contiguous(memory_format=torch.channels_last)
        c0 = time.process_time()
        fast = FastAttack(eps=eps, square_fraction=0.0, batch_size=128)
        res = fast.run(model, x, y)
        white_cpu = time.process_time() - c0
        surv = res.robust_correct.nonzero().squeeze(1)
        margin = fast.last_margin[surv]
        rank = margin.argsort().argsort().double() / max(len(surv), 1)
        c0 = time.process_time()
        sq = Square(eps=eps, n_queries=args.queries, rescale_schedule=False, seed=0)
        broke, queries = [], []
        for s in range(0, len(surv), 128):
            idx = surv[s : s + 128]
            adv = sq(model, x[idx], y[idx])
            with torch.no_grad():
                broke.append(model(adv).argmax(1) != y[idx])
            queries.append(sq.queries)
        sq_cpu = time.process_time() - c0
        broke_t, q_t = torch.cat(broke), torch.cat(queries)
        hits = [
            {"image": args.start + int(surv[i]), "margin": round(float(margin[i]), 4),
             "rank": round(float(rank[i]), 3), "queries": int(q_t[i])}
            for i in broke_t.nonzero().squeeze(1).tolist()
        ]  # fmt: skip
        entry = {
            "model": label, "eps": eps, "images": [args.start, args.start + args.n],
            "clean": int(res.clean_correct.sum()), "survivors": len(surv),
            "square_breaks": hits, "white_box_cpu_s": round(white_cpu, 1),
            "square_all_cpu_s": round(sq_cpu, 1),
            "margins_sorted": [round(float(v), 4) for v in margin.sort().values],
        }  # fmt: skip
        out["models"].append(entry)
        print(f"  {label}: clean {entry['clean']}, survivors {len(surv)}, Square broke "
              f"{len(hits)}: {hits}", flush=True)  # fmt: skip
        write_json(args.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
