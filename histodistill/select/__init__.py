"""Stage 4, the selection (notebook 04): per-class similarity graphs over the pool's embeddings
(`graphs`), InfoDist's Infomap selection and its baselines (`selection`), the optional removal of
near-copies of real train images from the pool (`privacy_filter`), the cached embedding and
selection stages (`distill`), the distilled set as a shareable product (`export`), and the
figures (`figures`)."""
