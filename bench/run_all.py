"""Run every benchmark in bench/ one after another; each writes its JSON to bench/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "bench_loader",
    "bench_models",
    "bench_attacks",
    "bench_margins",
    "bench_train",
    "bench_objectives",
    "bench_analysis",
    "bench_eval",
]


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    failed = []
    for name in BENCHES:
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], cwd=root)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
