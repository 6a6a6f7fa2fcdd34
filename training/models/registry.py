"""Architecture registry, timm style: ``@register_model(...)`` on a factory, ``create_model(name)`` to build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from model_store import FeatureSpec, InputSpec, parse_input


@dataclass(frozen=True)
class ModelCfg:
    """What the store needs to know about an architecture besides its weights."""

    task: str
    input: InputSpec | FeatureSpec  # a feature spec's length is a default: training takes it from the data
    outputs: tuple[str, ...] = ("logits",)
    defaults: dict = field(default_factory=dict)


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, ModelCfg] = {}


def register_model(task: str, input: dict, outputs: tuple[str, ...] = ("logits",), **defaults):
    """Register ``fn`` under its name with the input spec and outputs its models use by default."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"architecture {fn.__name__!r} is registered twice")
        _MODELS[fn.__name__] = fn
        _CFGS[fn.__name__] = ModelCfg(task, parse_input(input), tuple(outputs), defaults)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def _check(name: str) -> None:
    if name not in _MODELS:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")


def get_model_cfg(name: str) -> ModelCfg:
    _check(name)
    return _CFGS[name]


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build an architecture; ``kwargs`` override its registered defaults."""
    _check(name)
    return _MODELS[name](num_classes=num_classes, **{**_CFGS[name].defaults, **kwargs})


def input_kwargs(spec: InputSpec | FeatureSpec) -> dict:
    """What an architecture needs to know about its input: ``in_chans`` for images, ``in_features`` for vectors."""
    return {"in_features": spec.length} if isinstance(spec, FeatureSpec) else {"in_chans": spec.channels}
