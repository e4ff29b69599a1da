"""histodistill: a reproducible companion to InfoDist (Li & Kainz, MICCAI 2024), image
distillation for safe data sharing in histopathology.

One subpackage per stage of the pipeline, in the notebooks' order, each with its own
configuration (`config`):
    data         01: real images read, checked, split and cached
    classifiers  the ConvNet and ResNet-18, their one training loop, the real-trained judge (03 on)
    generate     02-03: the latent diffusion model, the sampler chosen on val, the synthetic pool
    select       04: the pool embedded, graphs per class, Infomap, the distilled set exported
    evaluate     05-06: classifiers trained on each set and tested once, the tables, the ablations
    privacy      07: the audit of the distilled set, with its positive and negative controls

Plumbing every stage uses: presets (the profiles), parameters (what each notebook parameter
sets), cache (the content-keyed cache), paths, machine, progress, plots, checkpoints, workers
(models side by side in processes). Orchestration above them: run_record (a run's record), runner
(./run_all.sh) and notebook_runs (papermill), compare, run_outputs and summary (a run's
results read back); lab_contents serves the notebooks to JupyterLab (scripts/lab.sh).
"""

__version__ = "0.1.0"
