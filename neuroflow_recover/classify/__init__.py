"""Failure classification: error classes, patterns, the classifier and retry policies."""
