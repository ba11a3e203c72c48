"""Sentiment inference service: API, queue protocol, batching, inference workers."""

__version__ = "0.2.0"
