"""Build tools run from a checkout (`make data`); not part of the installed package."""
