"""The Streamlit app's layer between the pages and the backend (see :mod:`metacog.app.ui`, the
pages' one import): state (which workspace), loader (the model), launch (background jobs),
readers (cached artifacts and their scores), widgets and panels (shared page pieces),
patching_view (the Patching page's tables). No science here: metrics come from the backend."""
