"""A configurable-depth ResNet per-frame backbone (§3.2.3; ResNet-101 in the paper preset).

Written here rather than taken from torchvision because torchvision's wheels do not import beside the
CPU torch these machines use, and because the edge preset wants narrow widths torchvision does not offer.
The block layout follows He et al. (2016): basic blocks up to 34 layers, bottlenecks from 50.
"""

from __future__ import annotations

import torch
from torch import nn

from cmmsf.validation import FileFieldError

LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out))


class _Block(nn.Module):
    def __init__(self, kind: str, c_in: int, width: int, stride: int):
        super().__init__()
        expansion = 4 if kind == "bottleneck" else 1
        c_out = width * expansion
        if kind == "basic":
            self.body = nn.Sequential(_conv_bn(c_in, width, 3, stride), nn.ReLU(), _conv_bn(width, c_out, 3))
        else:
            self.body = nn.Sequential(_conv_bn(c_in, width, 1), nn.ReLU(), _conv_bn(width, width, 3, stride),
                                      nn.ReLU(), _conv_bn(width, c_out, 1))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else _conv_bn(c_in, c_out, 1, stride))
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """frames [N, 3, H, W] → one embedding per frame [N, d_out]."""

    def __init__(self, depth: int, width: int, d_out: int):
        super().__init__()
        if depth not in LAYOUTS:
            raise FileFieldError(f"ResNet depth {depth} not supported; choose one of {sorted(LAYOUTS)}")
        kind, counts = LAYOUTS[depth]
        self.stem = nn.Sequential(_conv_bn(3, width, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(counts):
            for i in range(count):
                block = _Block(kind, channels, width * 2**stage, 2 if (i == 0 and stage > 0) else 1)
                blocks.append(block)
                channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, d_out)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # A plain mean, not AdaptiveAvgPool2d: the exporter needs no static spatial size for it.
        return self.head(self.blocks(self.stem(frames)).mean(dim=(2, 3)))
