"""Torch-free preprocessing, the one implementation used by training and by deployment."""
