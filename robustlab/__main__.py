"""Entry point for ``python -m robustlab`` (also what ``torchrun -m robustlab`` runs)."""

from robustlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
