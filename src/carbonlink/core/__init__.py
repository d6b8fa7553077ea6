"""Foundations every layer may use: the clock, durations, YAML files, TLS."""
