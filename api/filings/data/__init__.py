"""Data shipped with the filings (the chronic-disease catalogue)."""
