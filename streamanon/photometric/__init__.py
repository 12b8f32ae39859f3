"""photometric stage."""
