"""Kafka I/O shared by the bridge, the workers and the commands."""
