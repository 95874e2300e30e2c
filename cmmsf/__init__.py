"""CM-MSF: the PyTorch model of the paper, its config, data, training and metrics.

This file imports nothing heavy: the torch-free runtime imports `cmmsf.contracts` and
`cmmsf.config` through it. Input handling lives below this package, in `cmmsf/inputs/`; nothing here
imports `runtime` or `export`.
"""

__version__ = "0.1.0"
