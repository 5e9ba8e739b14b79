"""Maintenance scripts, run from the repository root (`.venv/bin/python scripts/NAME.py`)."""
