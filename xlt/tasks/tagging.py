"""Tasks of this family register here (see xlt/tasks/nli.py for the pattern)."""
