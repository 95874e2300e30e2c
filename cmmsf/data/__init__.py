"""Training data: the sources file's rules (splits, emotion→sentiment), dataset readers, voice augmentation."""
