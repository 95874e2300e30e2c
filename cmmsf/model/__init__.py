"""The PyTorch model of the paper: encoders, cascaded interaction, mask-gated fusion head, checkpoints."""
