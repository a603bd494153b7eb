"""The Gradio demo of VALL-E X, built only from :mod:`vallex`'s public API (see demo/README.md).

    from demo import build_app, main
    build_app().queue().launch()   # or simply: python app.py
"""
from demo.config import AppConfig
from demo.ui import build_app, main

__all__ = ["AppConfig", "build_app", "main"]
