"""Shared test helpers: synthetic images, tiny trained models, fixture builders, paths."""
