"""Tests of tumorcls.training and train.py."""
