"""CM-MSF: the one installed package. The PyTorch model of the paper, its config, data, training, metrics
and evaluation live here; so do input handling (`cmmsf.inputs`) and the commands (`cmmsf.cli`), and the
checkout's export/ and runtime/ folders install as `cmmsf.export` and `cmmsf.runtime` (pyproject.toml).

This file imports nothing heavy: the torch-free runtime imports `cmmsf.contracts` and `cmmsf.config`
through it. The model's modules import neither `cmmsf.runtime` nor `cmmsf.export` (tests/test_layers.py).
"""

__version__ = "0.1.0"
