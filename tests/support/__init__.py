"""Helpers the tests share: servers started as subprocesses, tiny models, fixture images."""
