"""Data layer: formats, partitions, images, caches, noise, datasets, and the stand-in dataset."""
