"""Input handling below both the model and the runtime: clips, decoding, log-mel, frames, tokens, batches.

Torch-free, and it imports nothing of the model (`cmmsf.*` outside this package) nor the runtime: training and deployment both import
it, so deployed inputs equal training inputs by construction. What it needs to know about a model is the
`InputSpec` (cmmsf/inputs/spec.py), which `ModelConfig.input_spec()` produces.
"""
