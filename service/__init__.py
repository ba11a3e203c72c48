"""Sentiment inference service: API, queue protocol, batching, inference workers."""
