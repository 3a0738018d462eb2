"""Tests of tumorcls.inference and tumorcls predict."""
