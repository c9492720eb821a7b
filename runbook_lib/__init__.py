"""Diagnostic notebooks for incident response: sources, findings, charts, runner, archive."""

__version__ = "0.1.0"
