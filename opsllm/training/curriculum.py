"""The two-stage curriculum: component localisation first, then component and fault type.

Plateau rule (``switch: plateau``), evaluated once per optimiser step in stage 1 on the watched reward
(the batch mean of the process reward, or of the outcome reward when process is off):

1. ``ma`` is the mean of the last ``window`` observations (no decision before ``window`` of them);
2. the best ``ma`` so far counts as improved only when a new ``ma`` exceeds it by more than ``min_delta``;
3. stage 2 starts when ``patience`` consecutive observations brought no improvement and at least
   ``min_steps`` stage-1 steps have run.

Manual overrides: ``switch_at_step`` switches at that step whatever the rule says, and a file
``<output_dir>/curriculum-override`` holding ``2`` switches a running job at its next step. The switch is
one way; the state (stage, history, when it switched and why) is saved with every checkpoint, so a
resumed run continues in the stage it was in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opsllm.spec.training import CurriculumSpec

__all__ = ["OVERRIDE_FILE", "STATE_FILE", "Curriculum", "CurriculumState"]

OVERRIDE_FILE = "curriculum-override"
STATE_FILE = "curriculum.json"


@dataclass
class CurriculumState:
    stage: int = 1
    observations: list[float] = field(default_factory=list)
    best: float | None = None
    since_best: int = 0
    switched_at: int | None = None
    reason: str = ""


class Curriculum:
    def __init__(self, spec: CurriculumSpec, override_dir: Path | None = None) -> None:
        self.spec = spec
        self.override_dir = override_dir
        self.state = CurriculumState(stage=spec.start_stage)

    @property
    def stage(self) -> int:
        return self.state.stage

    def observe(self, step: int, value: float | None) -> bool:
        """Feed the watched reward of ``step``; True when this call moved the run to stage 2."""
        s, spec = self.state, self.spec
        if s.stage == 2:
            return False
        if spec.switch_at_step is not None and step >= spec.switch_at_step:
            return self._switch(step, f"switch_at_step {spec.switch_at_step}")
        if self._override_requested():
            return self._switch(step, f"{OVERRIDE_FILE} file")
        if value is None or spec.switch != "plateau":
            return False
        p = spec.plateau
        s.observations.append(float(value))
        if len(s.observations) < p.window:
            return False
        ma = sum(s.observations[-p.window:]) / p.window
        if s.best is None or ma > s.best + p.min_delta:
            s.best, s.since_best = ma, 0
        else:
            s.since_best += 1
        if s.since_best >= p.patience and len(s.observations) >= p.min_steps:
            return self._switch(step, f"plateau: moving average {ma:.4f} of the {p.metric} reward, best "
                                      f"{s.best:.4f}, no gain above {p.min_delta} for {s.since_best} steps")
        return False

    def _override_requested(self) -> bool:
        if self.override_dir is None:
            return False
        try:
            return (self.override_dir / OVERRIDE_FILE).read_text().strip() == "2"
        except OSError:
            return False

    def _switch(self, step: int, reason: str) -> bool:
        self.state.stage, self.state.switched_at, self.state.reason = 2, step, reason
        return True

    def to_json(self) -> str:
        return json.dumps(asdict(self.state), indent=1)

    def save(self, folder: Path) -> None:
        from opsllm.files import write_text_atomic

        write_text_atomic(Path(folder) / STATE_FILE, self.to_json())

    def load(self, folder: Path) -> bool:
        """Restore the state saved in ``folder`` (a checkpoint); False when it holds none."""
        path = Path(folder) / STATE_FILE
        if not path.exists():
            return False
        self.state = CurriculumState(**json.loads(path.read_text()))
        return True
