"""Training tasks: how each kind of model reads, batches and scores its data (``training.train`` runs the loop)."""

from __future__ import annotations

import argparse

from model_store import TASKS
from training.models import get_model_cfg
from training.tasks.attributes import AttributeTask
from training.tasks.base import TrainTask
from training.tasks.face import FaceTask
from training.tasks.features import FeatureTask

# by the input kind of the architecture's task (model_store.manifest.TASKS)
TASK_CLASSES: dict[str, type[TrainTask]] = {
    "face": FaceTask,
    "clip": FaceTask,
    "frame": AttributeTask,
    "features": FeatureTask,
}


def task_for(args: argparse.Namespace) -> TrainTask:
    """The task the architecture was registered for, set up from the command line."""
    return TASK_CLASSES[TASKS[get_model_cfg(args.arch).task].input](args)


__all__ = ["AttributeTask", "FaceTask", "FeatureTask", "TrainTask", "task_for"]
