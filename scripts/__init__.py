"""One-off tools run from the project root (``python -m scripts.NAME``); not part of the installed package."""
