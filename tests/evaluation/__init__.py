"""Tests of tumorcls.evaluation."""
