"""One-off generators of the shipped vocabularies (``vocab/*.json``); never imported by the package."""
