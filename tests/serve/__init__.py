"""Tests of `tumorcls serve`: the HTTP API, the page in a real browser, the model worker, Keras parity."""
