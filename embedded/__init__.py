"""The embedded mode: every service in one process on the in-memory bus (what `make run` starts)."""
