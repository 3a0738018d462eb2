"""Tests of tumorcls.data."""
