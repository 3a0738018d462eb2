"""Tests of tumorcls.bench."""
