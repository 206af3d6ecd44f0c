"""The contamination audit: before any training, every set a run trains or selects on is checked
against every test set of its target, in every language of the target (docs/audit.md).

sets.py: the sets and the comparison; fields.py: per text field; keys.py: what is compared;
report.py: what is reported; cli.py: ``python -m xlt.audit``.
"""
