"""A gate: an ensemble's cheapest member answers alone for the faces it is sure of; the rest get the ensemble.

An ensemble's graph averages its members' calibrated probabilities. Where the manifest names one member's
probabilities (``gate.output``, a tensor of the graph) and a margin, the graph is cut in two at load time:
- the gate graph: the nodes that tensor needs (the member's own preprocessing and network), and nothing else;
- the rest graph: the ensemble with that tensor as an input instead, so its member's nodes fall away.
The rest graph fed the gate's probabilities computes the whole graph's outputs, node for node. ``Predictor.run``
serves ``log(p)`` of the gate for faces whose top-two gate margin is at least ``gate.margin`` (chosen on val so that
those faces' labels are the ensemble's), and runs the rest graph only for the others.
"""

from __future__ import annotations

import numpy as np


def gate_graph(model, output: str):
    """A copy of ``model`` (``onnx.ModelProto``) computing only ``output``."""
    from onnx import TensorProto, helper

    from model_store.routing import _drop_unused_initializers, _prune

    model = _copy(model)
    graph = model.graph
    _require(graph, output)
    nodes = _prune(list(graph.node), [output])
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["rows", "labels"]))
    _drop_unused_initializers(graph)
    return model


def rest_graph(model, output: str):
    """A copy of ``model`` that reads ``output`` as a second input (``N x labels`` float) instead of computing it."""
    from onnx import TensorProto, helper

    from model_store.routing import _drop_unused_initializers, _prune

    model = _copy(model)
    graph = model.graph
    _require(graph, output)
    kept = [n for n in graph.node if output not in n.output]
    nodes = _prune(kept, [o.name for o in graph.output])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["rows", "labels"]))
    _drop_unused_initializers(graph)
    return model


def _copy(model):
    import onnx

    return onnx.ModelProto.FromString(model.SerializeToString())


def _require(graph, output: str) -> None:
    if not any(output in n.output for n in graph.node):
        raise ValueError(f"the graph has no tensor {output!r} to gate on (the manifest's gate.output)")


def log_probs(probs: np.ndarray) -> np.ndarray:
    """The gate's answer as the ensemble writes its own: the log of the probabilities, floored at 1e-8."""
    return np.log(np.maximum(probs, 1e-8)).astype(np.float32)


def top_margin(probs: np.ndarray) -> np.ndarray:
    """Each row's top-two probability margin."""
    if probs.shape[-1] < 2:
        return np.ones(len(probs), np.float32)
    top = np.partition(probs, -2, axis=-1)
    return top[:, -1] - top[:, -2]
