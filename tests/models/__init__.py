"""Tests of tumorcls.models."""
