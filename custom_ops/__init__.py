"""Build helpers for the mnc_tf custom op library (see build.py)."""
