"""Operators' commands: status, release, replay."""
