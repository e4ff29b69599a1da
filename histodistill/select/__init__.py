"""Stage 4, the selection (notebook 04): per-class similarity graphs over the pool's embeddings
(`graphs`), InfoDist's Infomap selection and its baselines (`selection`), the cached embedding
and selection stages with the exported distilled set (`distill`), and the figures (`figures`)."""
