"""Tests of tumorcls.export and export.py."""
