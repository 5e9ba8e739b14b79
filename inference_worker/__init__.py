"""The inference worker: consumes prediction requests, micro-batches them through the model."""
