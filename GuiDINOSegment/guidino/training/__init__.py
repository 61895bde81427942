"""Training: augmentation, losses, datasets, the training loop, and refine from corrections."""
