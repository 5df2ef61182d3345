"""Model zoo: the registry/factory, the architectures and checkpoint loading."""

from robustlab.models import paperc, resnet, small, wideresnet  # noqa: F401  (register them)
from robustlab.models.checkpoint import LoadReport, load_checkpoint, read_weights, save_weights
from robustlab.models.layers import ImageClassifier, Normalize
from robustlab.models.registry import (
    available_models,
    create_model,
    describe_input_norm,
    input_normalization,
    model_spec,
    parse_input_norm,
    register_model,
)

__all__ = [
    "ImageClassifier",
    "LoadReport",
    "load_checkpoint",
    "read_weights",
    "save_weights",
    "Normalize",
    "available_models",
    "create_model",
    "describe_input_norm",
    "input_normalization",
    "parse_input_norm",
    "model_spec",
    "register_model",
]
