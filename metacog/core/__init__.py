"""metacog.core."""
