"""metacog.app."""
