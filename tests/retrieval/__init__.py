"""Tests for charter.retrieval."""
