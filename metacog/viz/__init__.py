"""metacog.viz."""
