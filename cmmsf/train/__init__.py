"""Training: the trainer and its recipes, face-backbone adaptation, voice statistics."""
