"""VALL-E X: zero-shot, cross-lingual text-to-speech (English, Mandarin, Japanese).

Importing the package does no work: models load lazily on first use.
"""
__version__ = "0.1.0"
