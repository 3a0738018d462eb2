"""Serve a model: one web page (Gradio) and an HTTP API (FastAPI) in one process, model loaded once, safe to put on
a network (host and origin checks, an optional API key, limits on bodies, decoding and uploads; README "Serve").

Import the parts from their modules (``tumorcls.serve.app`` for ``build_app``, ``tumorcls.serve.runner`` for
``serve`` / ``serving_in_thread``, ``tumorcls.serve.config`` for ``ServeConfig``): this package stays importable
without the ``serve`` extra, so that the ``tumorcls`` command can list ``serve`` and say what to install.
"""
