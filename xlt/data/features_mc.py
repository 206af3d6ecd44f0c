"""Featurisers of this head kind register here with @register_featurizer (see xlt/data/features.py)."""
