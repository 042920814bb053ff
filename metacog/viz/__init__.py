"""Figures: :mod:`metacog.viz.layout` (the palette, template, title convention and layout every
figure shares) and :mod:`metacog.viz.plots` (the study's figure builders: data in, ``go.Figure``
out, no Streamlit)."""
