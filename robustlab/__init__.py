"""robustlab: train, attack, evaluate and explain adversarially robust image classifiers."""

__version__ = "0.1.0"
