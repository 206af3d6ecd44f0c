"""LightningDataModules, featurisation with a tokenised-feature cache, and length-grouped batching."""

# Featurizer plugins: each registers its head kind's featurizer in xlt.data.features.FEATURIZERS.
from xlt.data import features_mc, features_qa, features_tagging  # noqa: F401
