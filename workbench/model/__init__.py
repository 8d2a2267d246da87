"""On-disk side of the model layer: versions, manifests, the repository, signing, demo models."""
