"""Shipped vocabularies (data only): ``<name>.json`` files, see README.md in this folder."""
