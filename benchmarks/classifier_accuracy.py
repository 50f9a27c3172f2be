"""How right the shipped classifier is on the repository's corpora of real failure messages.

Prints, for the development data and for the held-out corpus, the share of messages whose
class (with the resource for a ResourceError) is right and the share whose retry decision
(retry or dead-letter) is right. The held-out file was split off before the patterns were
written for the corpus and is never tuned against (docs/classification-corpus.md).

Run: ``python benchmarks/classifier_accuracy.py [--misses] [--only development|heldout]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neuroflow_recover.classify.classifier import Classifier
from neuroflow_recover.classify.corpus import Score, evaluate, read_corpus

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = {
    # the earlier sets were tuned against while the pack was written: development data
    "development": ("corpus_development.tsv", "failure_messages.tsv", "heldout_messages.tsv"),
    "heldout": ("corpus_heldout.tsv",),
}


def score_of(name: str, classifier: Classifier) -> Score:
    rows = [row for file in SETS[name] for row in read_corpus(DATA / file)]
    return evaluate(rows, classifier)


def line(name: str, score: Score) -> str:
    return (
        f"{name:<12} {score.total:>4} messages  class {score.class_right:>4}/{score.total} "
        f"({score.class_right / score.total:6.1%})  retry decision {score.retry_right:>4}/{score.total} "
        f"({score.retry_right / score.total:6.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misses", action="store_true", help="list the messages classified wrongly")
    parser.add_argument("--only", choices=sorted(SETS), help="score one set only")
    args = parser.parse_args()
    classifier = Classifier()
    for name in [args.only] if args.only else list(SETS):
        score = score_of(name, classifier)
        print(line(name, score))
        if args.misses:
            for miss in score.misses:
                want = miss.row.expected_class + (f"/{miss.row.expected_resource}" if miss.row.expected_resource else "")
                got = miss.got.error_class + (f"/{miss.got.resource}" if miss.got.resource else "")
                print(f"  {miss.row.id}: want {want}, got {got} [{miss.got.pattern_id}]"
                      f"{'' if miss.retry_right else '  RETRY WRONG'}")


if __name__ == "__main__":
    main()
