"""The command line's commands, one module each (``python -m bridge COMMAND``): its options,
and what it does with them. :mod:`bridge.cli` parses, configures logging and calls them."""
