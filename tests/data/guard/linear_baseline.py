"""An experiment, not part of the guard: how far a linear model over word and
character n-grams, trained on the development part, takes detection on the
validation part, alone and together with the guard. Only aggregate figures
are printed; no validation case is shown.

    pip install scikit-learn==1.9.1
    for f in dev validation; do
      cargo run --release -q -p fabric-guard --example verdicts -- \\
        tests/data/guard/$f.jsonl > /tmp/verdicts.$f.txt
    done
    python3 tests/data/guard/linear_baseline.py /tmp/verdicts.dev.txt /tmp/verdicts.validation.txt

The model's threshold is chosen on the development part alone (5-fold
cross-validated probabilities, the lowest threshold at which the guard or
the model flags at most the target share of development benign records).
"""

import json
import sys

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from guard_parts import HERE


def load(name):
    records = [json.loads(l) for l in (HERE / name).read_text().splitlines() if l.strip()]
    return [r["text"] for r in records], np.array([bool(r["injected"]) for r in records])


def verdicts(path):
    return np.array([l.strip() == "1" for l in open(path) if l.strip()])


def rate(flags, labels, injected):
    chosen = flags[labels == injected]
    return chosen.mean() if len(chosen) else 0.0


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    dev_text, dev_y = load("dev.jsonl")
    val_text, val_y = load("validation.jsonl")
    guard_dev, guard_val = verdicts(sys.argv[1]), verdicts(sys.argv[2])
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True, max_features=300_000)
    dev_x = hstack([words.fit_transform(dev_text), chars.fit_transform(dev_text)]).tocsr()
    val_x = hstack([words.transform(val_text), chars.transform(val_text)]).tocsr()

    def model():
        return LogisticRegression(C=10, max_iter=3000, class_weight="balanced")

    folds = StratifiedKFold(5, shuffle=True, random_state=1)
    dev_p = cross_val_predict(model(), dev_x, dev_y, cv=folds, method="predict_proba")[:, 1]
    val_p = model().fit(dev_x, dev_y).predict_proba(val_x)[:, 1]
    print(f"guard alone: validation {rate(guard_val, val_y, True):.1%} at {rate(guard_val, val_y, False):.1%}")
    for target in (0.01, 0.015, 0.02):
        threshold = next(
            (t for t in np.linspace(0.3, 0.99, 139) if rate(guard_dev | (dev_p >= t), dev_y, False) <= target),
            0.99,
        )
        dev_both, val_both = guard_dev | (dev_p >= threshold), guard_val | (val_p >= threshold)
        print(
            f"guard or model at {threshold:.3f} (development false positives at most {target:.1%}): "
            f"development {rate(dev_both, dev_y, True):.1%} at {rate(dev_both, dev_y, False):.1%} (cross-validated), "
            f"validation {rate(val_both, val_y, True):.1%} at {rate(val_both, val_y, False):.1%}; "
            f"model alone on validation {rate(val_p >= threshold, val_y, True):.1%} at {rate(val_p >= threshold, val_y, False):.1%}"
        )


if __name__ == "__main__":
    main()
