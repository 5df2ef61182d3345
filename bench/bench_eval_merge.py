"""Merge bench_eval.py outputs run concurrently (one process per model, evaluation and image
shard, all started together so machine load hits them alike) into one table.

Per model and evaluation: robust correct over all shards, process CPU seconds summed over the
shards (robust to the load of a shared machine, where wall time is not), wall seconds summed,
and the ratios to the reference and to AutoAttack standard.

Usage: python bench/bench_eval_merge.py OUT.json FILE.json...
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402

from robustlab.io import write_json  # noqa: E402


def main() -> None:
    out_path, files = sys.argv[1], sys.argv[2:]
    agg: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    machine = None
    for f in files:
        r = json.loads(Path(f).read_text())
        machine = machine or r["machine"]
        for e in r["models"]:
            for kind, runs in e["runs"].items():
                a = agg[e["model"]][kind]
                run = runs[0]
                a["n"] = a.get("n", 0) + r["n"]
                a["robust_correct"] = a.get("robust_correct", 0) + run["robust_correct"]
                a["cpu_seconds"] = a.get("cpu_seconds", 0.0) + run["cpu_seconds"]
                a["wall_seconds"] = a.get("wall_seconds", 0.0) + run["seconds"]
                a["processes"] = a.get("processes", 0) + 1
                a["eps"] = e["eps"]
    lines = [machine_line(machine) if machine else "", "",
             "| model | eps | n | evaluation | CPU s | robust acc | CPU time vs reference |"
             " vs AA standard |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    table = {}
    for model, kinds in agg.items():
        ref = kinds.get("reference", {}).get("cpu_seconds")
        std = kinds.get("standard", {}).get("cpu_seconds")
        first = ("reference", "standard", "fast")  # then tagged ones (bench_eval.py --tag)
        for kind in [k for k in first if k in kinds] + sorted(set(kinds) - set(first)):
            a = kinds[kind]
            a["robust_accuracy"] = a["robust_correct"] / a["n"]
            r1 = f"{a['cpu_seconds'] / ref:.2f}x" if ref else "-"
            r2 = f"{a['cpu_seconds'] / std:.2f}x" if std else "-"
            lines.append(f"| {model} | {a['eps']:.4g} | {a['n']} | {kind} | "
                         f"{a['cpu_seconds']:.0f} | {a['robust_accuracy']:.3f} "
                         f"({a['robust_correct']}/{a['n']}) | {r1} | {r2} |")  # fmt: skip
        table[model] = kinds
    text = "\n".join(lines)
    write_json(out_path, {"machine": machine, "table": table, "markdown": text, "files": files})
    print(text)


if __name__ == "__main__":
    main()
