"""Scoring root-cause predictions against labels.

- ``component_acc``: the top component is the label's;
- ``type_acc``: component and fault type both right (the paper's type-level accuracy);
- ``level_acc``: the predicted level (service, pod, node) is the label's;
- ``ac@k``: the label's component is among the first k of the ranking; ``avg@5`` the mean of ac@1..ac@5;
- the same figures per fault type and per Chaos Mesh kind, and for a constant guess (the most frequent
  component and fault type of the scored set) beside them: a predictor is only worth what it adds over that.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opsllm.errors import UsageError
from opsllm.evaluation.baseline import Prediction
from opsllm.spec.sample import RCASample, blind

Predictor = Callable[[RCASample], Prediction]


@dataclass
class _Tally:
    n: int = 0
    component: int = 0
    both: int = 0
    level: int = 0
    at: tuple[int, ...] = (0, 0, 0, 0, 0)

    def add(self, pred: Prediction, truth) -> None:
        self.n += 1
        hit = [truth.component in pred.ranking[:k] for k in range(1, 6)]
        self.at = tuple(a + int(h) for a, h in zip(self.at, hit, strict=True))
        top = pred.ranking[0] if pred.ranking else ""
        self.component += int(top == truth.component)
        self.both += int(top == truth.component and pred.fault_type == truth.fault_type)
        self.level += int(pred.level == truth.level)

    def figures(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"samples": self.n, "component_acc": self.component / n, "type_acc": self.both / n,
                "level_acc": self.level / n, "ac@1": self.at[0] / n, "ac@3": self.at[2] / n,
                "avg@5": sum(self.at) / (5 * n)}


def prediction_record(sample: RCASample, pred: Prediction) -> dict:
    """One line of ``eval rca --errors``: what was predicted for a labelled sample, beside its truth."""
    truth = sample.label
    top = pred.ranking[0] if pred.ranking else None
    return {"id": sample.id, "kind": truth.kind,
            "predicted": {"ranking": list(pred.ranking[:3]), "fault_type": pred.fault_type, "level": pred.level},
            "truth": {"component": truth.component, "fault_type": truth.fault_type, "level": truth.level},
            "right": {"component": top == truth.component, "fault_type": pred.fault_type == truth.fault_type,
                      "level": pred.level == truth.level, "in_top3": truth.component in pred.ranking[:3]}}


def score(samples: Iterable[RCASample], predictor: Predictor,
          on_prediction: Callable[[RCASample, Prediction], None] | None = None) -> dict:
    """Figures of ``predictor`` on the labelled samples, with a constant guess beside them.

    ``on_prediction`` is called after each prediction with the sample as given (its real id and label),
    not the blinded copy the predictor saw."""
    samples = list(samples)
    labelled = [s for s in samples if s.label is not None]
    # Predictors see a blinded copy: no label, and no id or provenance that could name the answer.
    salt = os.urandom(16)
    shown = [blind(s, salt) for s in labelled]
    if len({s.id for s in shown}) != len(shown):
        repeated = sorted({s.id for s in labelled if sum(t.id == s.id for t in labelled) > 1})[:3]
        raise UsageError(f"sample ids are not unique (e.g. {', '.join(repeated)}): a batched predictor keys its "
                         "answers by id; give every scored sample its own id (rebuild the dataset from its windows)")
    prepare = getattr(predictor, "prepare", None)
    if prepare is not None:   # a batched predictor (a model) answers all samples in one pass
        prepare(shown)
    overall, per_type, per_kind = _Tally(), {}, {}
    for sample, view in zip(labelled, shown, strict=True):
        pred = predictor(view)
        if on_prediction is not None:
            on_prediction(sample, pred)
        overall.add(pred, sample.label)
        per_type.setdefault(sample.label.fault_type, _Tally()).add(pred, sample.label)
        per_kind.setdefault(sample.label.kind, _Tally()).add(pred, sample.label)
    comp = Counter(s.label.component for s in labelled).most_common(1)
    ftype = Counter(s.label.fault_type for s in labelled).most_common(1)
    level = Counter(s.label.level for s in labelled).most_common(1)
    constant = _Tally()
    if labelled:
        ranked = [c for c, _ in Counter(s.label.component for s in labelled).most_common()]
        guess = Prediction(ranking=ranked, fault_type=ftype[0][0], level=level[0][0])
        for s in labelled:
            constant.add(guess, s.label)
    return {
        **overall.figures(),
        "per_fault_type": {k: v.figures() for k, v in sorted(per_type.items())},
        "per_kind": {k: v.figures() for k, v in sorted(per_kind.items())},
        "constant_guess": {**constant.figures(), "component": comp[0][0] if comp else None,
                           "fault_type": ftype[0][0] if ftype else None},
        "unlabelled_skipped": len(samples) - len(labelled),
        **({"format_failures": predictor.format_failures} if hasattr(predictor, "format_failures") else {}),
    }
