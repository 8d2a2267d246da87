"""In-memory side of the model layer: devices, Paddle predictors, loaded versions, the hub."""
