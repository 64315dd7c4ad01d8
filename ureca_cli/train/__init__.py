"""Training the region captioner: configuration, data, the two stages on the transformers Trainer, and the
synthetic task."""
