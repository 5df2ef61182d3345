"""Distributed ``robustlab eval`` under torchrun: join the process group and agree on the run
directory. The sharding itself is :class:`robustlab.attacks.autoattack.Sharding`: each
attack's batches are spread over the ranks and gathered, so that rank 0 writes the summary a
single process would (same seed, same batch size).

torchrun's own parser reads ``--n`` as an ambiguous abbreviation of its options (``--nnodes``,
``--nproc-per-node``, ...), so under torchrun write ``--num-images`` or put ``--`` before the
subcommand: ``torchrun --nproc-per-node 2 -m robustlab -- eval ... --n 64``.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

__all__ = ["distributed", "sharding", "shared_run_dir"]


def distributed(device: str) -> Any:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (gloo on the CPU, NCCL on
    GPUs with ``cuda:LOCAL_RANK``) and return its ``DistInfo``; else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from robustlab.train.distributed import cleanup_distributed, setup_distributed

    info = setup_distributed(device)
    atexit.register(cleanup_distributed)
    return info


def sharding(info: Any) -> Any:
    """The attacks' :class:`~robustlab.attacks.autoattack.Sharding` for this process."""
    from robustlab.attacks.autoattack import Sharding
    from robustlab.train.distributed import all_gather_object

    return Sharding(info.rank, info.world_size, all_gather_object)


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run directory (its default name holds a time stamp), on every rank."""
    from robustlab.train.distributed import broadcast_object

    return Path(broadcast_object(str(run_dir)))
