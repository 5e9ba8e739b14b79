"""The ingest service: validates uploaded images, strips their metadata, stores them labelled."""
