"""metacog.model: a loaded causal LM and how to read and write its residual stream.

- :mod:`metacog.model.loading` — model spec → :class:`~metacog.model.loading.LoadedModel`
  (public entry :func:`~metacog.model.loading.load_model`; offline-first, GGUF dequantised once);
- :mod:`metacog.model.arch` — what differs between architecture families, in one table;
- :mod:`metacog.model.hooks` — capture/patch the residual stream ``[B, P, n_layers+1, d_model]``
  by forward hooks (hidden-state index ``h`` in 0..n_layers);
- :mod:`metacog.model.generation` — batched greedy or seeded sampled generation with per-row stops;
- :mod:`metacog.model.lens` — TransformerLens hook names (``blocks.{l}.hook_resid_post``) for the
  same states, a workspace's activation cache read by hook name, and a TransformerLens cross-check.
"""
