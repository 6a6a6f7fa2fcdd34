"""dlib's face-recognition ResNet read into torch: the file reader, the zero-filling add, and the descriptor against
dlib's own on real faces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from training.models.dlib_format import DlibFormatError, read_dlib_net
from training.models.dlib_resnet import DLIB_FILE, DlibFaceResNet, load_dlib_weights, zero_fill_add

needs_dlib_models = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib's network file comes with face-recognition-models (the dev extra installs it)",
)


def test_zero_fill_add_pads_channels_rows_and_columns_at_the_end():
    small = torch.ones(1, 2, 3, 3)
    large = torch.full((1, 4, 4, 4), 10.0)
    out = zero_fill_add(small, large)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 11) and torch.all(out[:, 2:] == 10)
    assert torch.all(out[:, :, 3, :] == 10) and torch.all(out[:, :, :, 3] == 10)
    assert torch.equal(zero_fill_add(large, small), out)  # the same sum whichever side is larger


@pytest.mark.parametrize("size", [112, 150])
def test_the_network_runs_at_the_sizes_dlib_reaches(size):
    model = DlibFaceResNet(7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)
    with pytest.raises(ValueError, match="RGB"):
        DlibFaceResNet(7, in_chans=1)


@needs_dlib_models
def test_the_reader_returns_every_layer_input_first():
    from model_store.packaged import packaged_model

    net = read_dlib_net(packaged_model(DLIB_FILE, "test"))
    kinds = [layer.kind for layer in net.layers]
    assert net.loss.startswith("loss_metric") and net.input_size == (150, 150)
    assert np.allclose(net.input_mean, (122.782, 117.001, 104.298), atol=1e-3)
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds[-1] == "fc"
    assert net.layers[0].weights["weight"].shape == (32, 3, 7, 7) and net.layers[0].settings["stride"] == (2, 2)


@needs_dlib_models
def test_a_damaged_or_foreign_file_is_refused_with_where_it_stopped(tmp_path):
    from model_store.packaged import packaged_model

    data = packaged_model(DLIB_FILE, "test").read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match=r"byte \d+"):
        read_dlib_net(cut)
    foreign = tmp_path / "foreign.dat"
    foreign.write_bytes(b"\x01\x01\x01\x05hello" + b"\x00" * 64)
    with pytest.raises(DlibFormatError, match="not a dlib network file"):
        read_dlib_net(foreign)


@needs_dlib_models
def test_the_descriptor_equals_dlibs_on_real_faces(photo_paths):
    """The torch module with dlib's weights gives dlib's own 128-d descriptor on dlib's aligned chips of real faces."""
    import cv2
    import dlib

    from model_store.packaged import packaged_model

    model = load_dlib_weights(DlibFaceResNet(descriptor=True)).eval()
    recogniser = dlib.face_recognition_model_v1(str(packaged_model(DLIB_FILE, "test")))
    landmarks = dlib.shape_predictor(str(packaged_model("shape_predictor_5_face_landmarks.dat", "test")))
    detector = dlib.get_frontal_face_detector()
    mean = torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)
    worst, compared = 0.0, 0
    for path in photo_paths[:40]:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        faces = detector(rgb, 1)
        if not faces:
            continue
        chip = dlib.get_face_chip(rgb, landmarks(rgb, faces[0]), 150, 0.25)
        expected = np.array(recogniser.compute_face_descriptor(chip))
        with torch.no_grad():
            got = model((torch.from_numpy(chip).permute(2, 0, 1)[None].float() - mean) / 256.0)[0].numpy()
        worst, compared = max(worst, float(np.abs(got - expected).max())), compared + 1
        if compared == 10:
            break
    print(f"largest descriptor difference over {compared} faces: {worst:.2e}")
    assert compared == 10 and worst <= 1e-4


@needs_dlib_models
def test_pretrained_keeps_dlibs_trunk_under_a_new_head():
    from training.models import create_model

    model = create_model("dlib_resnet", 7, pretrained=True)
    reference = load_dlib_weights(DlibFaceResNet(descriptor=True))
    assert torch.equal(model.stem[0].weight, reference.stem[0].weight)
    assert torch.equal(model.blocks[-1].aff2.bias, reference.blocks[-1].aff2.bias)
    assert model.head[-1].out_features == 7
