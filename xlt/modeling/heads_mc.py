"""Heads of this kind register here with @register_head (see xlt/modeling/heads.py)."""
