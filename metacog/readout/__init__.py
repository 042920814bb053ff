"""metacog.readout."""
