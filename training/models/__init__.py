"""Registered architectures; importing this package registers them all."""

from training.models import clip, dlib_resnet, ensemble, face, features, frames  # noqa: F401  (registration side effects)
from training.models.registry import (
    ModelCfg,
    create_model,
    get_model_cfg,
    input_kwargs,
    list_models,
    register_model,
)

__all__ = ["ModelCfg", "create_model", "get_model_cfg", "input_kwargs", "list_models", "register_model"]
