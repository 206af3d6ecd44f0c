"""Utilities every layer uses: the console (tables, command-line parsers, one-line errors) and the
generic registry."""
