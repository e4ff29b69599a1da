"""histodistill: a reproducible companion to InfoDist (Li & Kainz, MICCAI 2024), image
distillation for safe data sharing in histopathology.

One subpackage per stage of the pipeline, in the notebooks' order:
    data         01: real images read, checked, split and cached
    generate     02-03: the latent diffusion model, the sampler chosen on val, the synthetic pool
    classifiers  the ConvNet and ResNet-18 and their one training loop (used from 03 on)
    select       04: the pool embedded, graphs per class, Infomap, the distilled set exported
    evaluate     05-06: classifiers trained on each set and tested once, the tables, the ablations
    privacy      07: the audit of the distilled set, with its positive and negative controls

Plumbing every stage uses: config and presets (each stage's configuration and the profiles),
cache (the content-keyed cache), paths, machine, progress, plots, checkpoints, workers (models
side by side in processes). Orchestration above them: runs (a run's record), runner
(./run_all.sh), parameters (the runner's checks of -p), compare, summary.
"""

__version__ = "0.1.0"
