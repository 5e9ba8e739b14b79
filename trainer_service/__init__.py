"""Trainer service: builds, trains, calibrates and evaluates DermaScan models."""
