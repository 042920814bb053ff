"""metacog.stages."""
