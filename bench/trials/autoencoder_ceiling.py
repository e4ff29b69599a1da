"""What the demo's autoencoder alone costs the pool's scores: real images and their
autoencoder round trips, each scored as a synthetic pool is (`guidance.pool_scores`: class
consistency, texture, Fréchet distance, precision/recall against real val).

The pool is the first 17 real train images of every class (at most; the size the real
floor is computed at inside `pool_scores`), so a round trip's scores are the ceiling a
latent denoiser could reach if it sampled the train images themselves. Writes
bench/trials/results/autoencoder_ceiling.csv.

    python bench/trials/autoencoder_ceiling.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histodistill import presets
from histodistill.classifiers import judge
from histodistill.data import dataset
from histodistill.generate import autoencoder, guidance, stages

PER_CLASS = 17
RESULTS = Path(__file__).parent / "results" / "autoencoder_ceiling.csv"


def main() -> None:
    torch.manual_seed(0)
    bundle = dataset.prepare_data(presets.stage_config("data", "demo"))
    vae = stages.load_autoencoder(stages.fit_autoencoder(presets.stage_config("autoencoder", "demo"), bundle))
    classifier = judge.load_classifier(judge.fit_classifier(presets.stage_config("classifier", "demo"), bundle))
    features = guidance.judge_features(classifier, bundle)
    train = bundle.splits["train"]
    rng = np.random.default_rng(0)
    picks = np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:PER_CLASS]
                            for c in range(bundle.n_classes)])
    images, labels = train.images[picks], train.labels[picks]
    rows = []
    for name, pool in (("real train images", images),
                       ("their autoencoder round trips", autoencoder.decode(vae, autoencoder.encode(vae, images)))):
        scores = guidance.pool_scores(pool, labels, classifier, bundle, features)
        rows.append({"pool": name, **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}})
        print(rows[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
