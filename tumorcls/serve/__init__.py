"""Serve a model: one web page (Gradio) and an HTTP API (FastAPI) in one process, model loaded once.

Import the parts from their modules (``tumorcls.serve.app`` for ``build_app`` / ``serve``, ``tumorcls.serve.config``
for ``ServeConfig``): this package stays importable without the ``serve`` extra, so that the ``tumorcls`` command
can list ``serve`` and say what to install.
"""
