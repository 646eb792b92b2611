"""`opsllm dprm build-data`: reasoning chains for the RCA cases, each scored 0-5 by a rubric judge.

For every labelled case, the generator writes ``config.chains`` reasoning chains at ``config.temperature``,
given the correct component and fault type (:func:`opsllm.training.rubric.generator_messages`); the judge
grades each chain on the five rubrics at temperature 0 (:func:`opsllm.training.rubric.judge_messages`). A
reply with no readable verdict is asked for once more with a reminder; a chain whose verdict is still
unreadable is left out and counted.

The output is JSON Lines, one row per chain::

    {"id": sample id, "chain_index": index among the case's sampled chains (0-based),
     "prompt": the case's user prompt (opsllm.data.prompt.user_prompt), "chain": the generator's text,
     "score": 0-5, "rubrics": {rubric: 0 or 1, ...}, "rationale": the judge's reason,
     "component": correct component, "fault_type": correct fault type,
     "answer_ok": whether the chain's answer parses and names the correct component and fault type,
     "generator": generator model, "judge": judge model, "case_rows": rows this case has in the file}

Resuming: the rows of a case are appended in one write, flushed and fsynced, in the order of the samples,
so a killed run leaves whole cases and at most one torn case at the end. The next run cuts that torn case
(``case_rows`` tells a whole case from a torn one) and skips the whole ones. Every request is cached (see
:class:`~opsllm.models.endpoint.ChatEndpoint`), so redoing a case, or rebuilding a deleted output, sends
nothing that was answered before.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from opsllm.data.prompt import parse_answer, user_prompt
from opsllm.errors import StorageError, UsageError
from opsllm.models.endpoint import ChatEndpoint
from opsllm.spec.sample import RCASample
from opsllm.spec.training import DPRMDataConfig
from opsllm.training.examples import cut_observation
from opsllm.training.rubric import JUDGE_REMINDER, generator_messages, judge_messages, parse_verdict

__all__ = ["BuildSummary", "build_dprm_data", "default_cache_dir"]


@dataclass(frozen=True)
class BuildSummary:
    """What one run of :func:`build_dprm_data` did."""

    output: Path
    cases: int             # labelled cases selected (after data.limit)
    cases_resumed: int     # already whole in the output: not redone
    chains_written: int
    chains_skipped: int    # left out: the judge's verdict could not be read, even after a reminder
    requests_sent: int     # to the generator and the judge together; 0 when everything came from the cache
    cache_hits: int


def default_cache_dir(output: str | os.PathLike[str]) -> Path:
    """``<output>.cache/`` beside the output file."""
    output = Path(output)
    return output.with_name(output.name + ".cache")


def build_dprm_data(config: DPRMDataConfig, *, progress: bool = True, console: Console | None = None) -> BuildSummary:
    """Write (or complete) ``config.output``: the scored chains of every selected case."""
    from opsllm.fusion.load import load_samples

    samples = load_samples(Path(config.data.path), split=config.data.split)
    if config.data.limit is not None:
        samples = samples[: config.data.limit]
    # The DPRM sees the prompts GRPO will show the policy: observations cut as the training configs cut them.
    samples = [cut_observation(s, config.data.max_prompt_chars) for s in samples]
    unlabelled = [s.id for s in samples if s.label is None]
    if unlabelled:
        more = f" and {len(unlabelled) - 1} more" if len(unlabelled) > 1 else ""
        raise UsageError(f"sample {unlabelled[0]}{more} in {config.data.path} (split {config.data.split}) has no "
                         "label; DPRM chains are written towards the correct answer, so every case needs one: "
                         "choose a labelled dataset or split")
    output = Path(config.output)
    done = _resume(output, config)
    todo = [s for s in samples if s.id not in done]
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir(output)
    generator = ChatEndpoint(config.generator, cache_dir)
    judge = ChatEndpoint(config.judge, cache_dir)
    written = skipped = 0
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[current]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=console, disable=not progress)
    workers = config.generator.concurrency + config.judge.concurrency
    try:
        with bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dprm") as pool, \
                _Appender(output) as out:
            task = bar.add_task("dprm chains", total=len(samples), completed=len(samples) - len(todo), current="")
            futures: list[Future[tuple[list[dict[str, Any]], int]]] = [
                pool.submit(_case, s, config, generator, judge) for s in todo]
            try:
                for sample, future in zip(todo, futures, strict=True):
                    rows, lost = future.result()
                    out.append(rows)
                    written += len(rows)
                    skipped += lost
                    bar.update(task, advance=1, current=sample.id)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        generator.close()
        judge.close()
    return BuildSummary(output=output, cases=len(samples), cases_resumed=len(samples) - len(todo),
                        chains_written=written, chains_skipped=skipped,
                        requests_sent=generator.requests_sent + judge.requests_sent,
                        cache_hits=generator.cache_hits + judge.cache_hits)


def _case(sample: RCASample, config: DPRMDataConfig, generator: ChatEndpoint,
          judge: ChatEndpoint) -> tuple[list[dict[str, Any]], int]:
    """The rows of one case, and how many of its chains were left out."""
    assert sample.label is not None
    component, fault_type = sample.label.component, sample.label.fault_type
    prompt = user_prompt(sample)
    chains = generator.complete(generator_messages(sample), n=config.chains, temperature=config.temperature,
                                seed=config.seed)
    rows: list[dict[str, Any]] = []
    for index, chain in enumerate(chains):
        messages = judge_messages(prompt, chain, component, fault_type)
        reply = judge.complete(messages)[0]
        verdict = parse_verdict(reply)
        if verdict is None:
            reminder = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": JUDGE_REMINDER}]
            verdict = parse_verdict(judge.complete(reminder)[0])
        if verdict is None:
            continue
        rows.append({
            "id": sample.id, "chain_index": index, "prompt": prompt, "chain": chain, "score": verdict.score,
            "rubrics": verdict.rubrics, "rationale": verdict.rationale, "component": component,
            "fault_type": fault_type, "answer_ok": parse_answer(chain, sample.candidates) == (component, fault_type),
            "generator": config.generator.model, "judge": config.judge.model,
        })
    for row in rows:
        row["case_rows"] = len(rows)
    return rows, len(chains) - len(rows)


def _resume(output: Path, config: DPRMDataConfig) -> set[str]:
    """Ids of the cases already whole in ``output``; a torn case at its end is cut off."""
    try:
        data = output.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise StorageError(f"could not read {output}: {exc.strerror}; check its permissions", path=str(output)) \
            from exc
    # Whole lines only: bytes after the last newline are a write that a crash cut short.
    keep = data.rfind(b"\n") + 1
    lines = [line + b"\n" for line in data[:keep].split(b"\n")[:-1]]
    rows: list[tuple[int, dict[str, Any]]] = []  # (offset of the line, row)
    offset = 0
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) \
                    or not isinstance(row.get("case_rows"), int):
                raise ValueError("not a chain row")
        except ValueError as exc:
            if number == len(lines):  # a torn last line that happens to end in a newline
                keep = offset
                break
            raise StorageError(f"{output} line {number} is not a row of `opsllm dprm build-data` ({exc}); "
                               "remove the file, or choose another output", path=str(output)) from exc
        rows.append((offset, row))
        offset += len(line)
    # The rows of a case are contiguous; the last case is whole only when all the rows it announces are there.
    if rows:
        last = rows[-1][1]
        group = len(rows)
        while group > 0 and rows[group - 1][1]["id"] == last["id"]:
            group -= 1
        if len(rows) - group != last["case_rows"]:
            keep = rows[group][0]
            rows = rows[:group]
    for _, row in rows:
        for role in ("generator", "judge"):
            model = getattr(config, role).model
            if row.get(role) != model:
                raise UsageError(f"{output} holds chains made with {role} {row.get(role)!r}, but this config's "
                                 f"{role} is {model!r}; choose another output, or remove it to start over")
    if keep != len(data):
        try:
            os.truncate(output, keep)
        except OSError as exc:
            raise StorageError(f"could not cut the torn end off {output}: {exc.strerror}; check its permissions",
                               path=str(output)) from exc
    return {row["id"] for _, row in rows}


class _Appender:
    """Appends whole cases to the output: one write, flush and fsync per case."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Appender:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")
        except OSError as exc:
            raise self._error("open", exc) from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._fh.close()

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        block = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        try:
            self._fh.write(block)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise self._error("append to", exc) from exc

    def _error(self, action: str, exc: OSError) -> StorageError:
        return StorageError(f"could not {action} {self.path}: {exc.strerror or exc}; check free disk space and the "
                            "permissions of the folder", path=str(self.path))
