"""The model store: manifest schema, store read/write with sha256 checks, the shared preprocessing, and the
Predictor that runs what the store holds."""

from model_store.affect import CIRCUMPLEX, derive_valence_arousal, probabilities
from model_store.device import resolve_device
from model_store.manifest import FileEntry, InputSpec, Manifest, is_valid_name
from model_store.predictor import FacePrediction, Predictions, Predictor, Prepared, merge_mirror
from model_store.preprocess import (
    crop_face,
    expand_box,
    normalize,
    prepare_batch,
    preprocess,
    to_uint8_face,
)
from model_store.runtime import BACKENDS, Runner, create_runner
from model_store.store import (
    DEFAULT_ROOT,
    StoreEntry,
    StoreError,
    find,
    publish,
    read_manifest,
    scan,
    sha256_file,
    verify_file,
    version_key,
)

__all__ = [
    "BACKENDS",
    "CIRCUMPLEX",
    "DEFAULT_ROOT",
    "FacePrediction",
    "FileEntry",
    "InputSpec",
    "Manifest",
    "Predictions",
    "Predictor",
    "Prepared",
    "Runner",
    "StoreEntry",
    "StoreError",
    "create_runner",
    "crop_face",
    "derive_valence_arousal",
    "expand_box",
    "find",
    "is_valid_name",
    "merge_mirror",
    "normalize",
    "prepare_batch",
    "preprocess",
    "probabilities",
    "publish",
    "read_manifest",
    "resolve_device",
    "scan",
    "sha256_file",
    "to_uint8_face",
    "verify_file",
    "version_key",
]
