"""metacog.model."""
