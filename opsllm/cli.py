"""The ``opsllm`` command."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from opsllm import __version__
from opsllm.data.cli import SplitByOption, TimeBlockOption, dataset_app
from opsllm.errors import OperationalError, UsageError
from opsllm.training.cli import dprm_app, train_app

app = typer.Typer(help="OpsLLM: a fault-injection lab and post-training for operations LLMs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
campaign_app = typer.Typer(help="Plan and run InjectionCampaigns.", no_args_is_help=True)
lab_app = typer.Typer(help="The OnlineBoutique twin.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(lab_app, name="lab")
eval_app = typer.Typer(help="Evaluate predictors.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(dataset_app, name="dataset")
app.add_typer(train_app, name="train")
app.add_typer(dprm_app, name="dprm")
operator_app = typer.Typer(help="The Kubernetes operator.", no_args_is_help=True)
app.add_typer(operator_app, name="operator")

out = Console()
err = Console(stderr=True)

CampaignFile = Annotated[Path, typer.Argument(help="An InjectionCampaign YAML file.", show_default=False)]
Crds = Annotated[str | None, typer.Option("--crds", help="Chaos Mesh CRD bundle (manifests/crd.yaml of "
                                          "chaos-mesh) to validate every Chaos Mesh object against.")]


def _fail(exc: Exception) -> None:
    code = 2 if isinstance(exc, UsageError) else 1
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    raise typer.Exit(code)


def _load(path: Path):
    from opsllm.spec.campaign import load_campaign

    try:
        return load_campaign(path)
    except UsageError as exc:
        _fail(exc)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """OpsLLM: a fault-injection lab and post-training for operations LLMs."""


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@campaign_app.command("validate")
def campaign_validate(file: CampaignFile, crds: Crds = None) -> None:
    """Check a campaign file, and each Chaos Mesh object it would apply when --crds is given."""
    from opsllm.lab.planner import plan
    from opsllm.spec.chaosmesh import render, validate

    campaign = _load(file)
    injections = plan(campaign)
    if crds:
        try:
            for inj in injections:
                validate(render(inj, campaign.spec.system.namespace), crds)
        except UsageError as exc:
            _fail(exc)
    checked = " and their Chaos Mesh objects" if crds else ""
    out.print(f"[green]ok[/] {file}: {len(injections)} injections{checked} valid")


MemoryBudget = Annotated[str, typer.Option("--memory-budget", help="Refuse a plan whose estimated peak memory "
                                            "on the twin is over this, e.g. 8GiB or 512MiB.")]


def _estimate_line(file: Path, campaign, injections, budget: str) -> str:
    """The plan's estimated cost; UsageError when its peak memory is over ``budget``."""
    from opsllm.lab.planner import estimate
    from opsllm.spec.duration import format_duration
    from opsllm.spec.sizes import format_bytes, parse_bytes

    try:
        limit = parse_bytes(budget)
    except ValueError as exc:
        raise UsageError(f"--memory-budget: {exc}") from exc
    e = estimate(campaign, injections)
    if e.peak_memory_bytes > limit:
        raise UsageError(f"{file}: the twin would need about {format_bytes(e.peak_memory_bytes)} of memory for its "
                         f"longest window ({format_duration(e.longest_window_s)}, {e.series} series, "
                         f"{campaign.spec.system.loadGenerator.users} users), over --memory-budget {budget}; "
                         "shorten spec.timing (collectionWindow, baseline, faultDuration, cooldown) or the faults' "
                         "duration, lower spec.system.loadGenerator.users, or raise --memory-budget")
    return (f"estimate: {format_duration(e.simulated_s)} simulated, about {format_bytes(e.disk_bytes)} on disk, "
            f"{format_bytes(e.peak_memory_bytes)} peak memory (budget {budget})")


@campaign_app.command("plan")
def campaign_plan(file: CampaignFile, as_json: Annotated[bool, typer.Option("--json")] = False,
                  memory_budget: MemoryBudget = "8GiB") -> None:
    """Print the injections a campaign plans, in order, and an estimate of what running them on the twin costs."""
    from opsllm.lab.planner import plan

    campaign = _load(file)
    injections = plan(campaign)
    try:
        cost = _estimate_line(file, campaign, injections, memory_budget)
    except UsageError as exc:
        _fail(exc)
    count = f"{len(injections)} injections"
    if as_json:
        sys.stdout.write(json.dumps([i.model_dump(mode="json") for i in injections], indent=2) + "\n")
        # stderr, so that stdout stays the JSON list that scripts parse
        err.print(count, highlight=False)
        err.print(cost, highlight=False)
        return
    table = Table("id", "kind/action", "level", "target", "fault start (UTC)", "duration")
    for i in injections:
        table.add_row(i.id, f"{i.kind}/{i.action}", i.level, i.component,
                      i.fault_start.strftime("%Y-%m-%d %H:%M:%S"), f"{i.duration:g}s")
    out.print(table)
    out.print(count, highlight=False)
    out.print(cost, highlight=False)


@campaign_app.command("render")
def campaign_render(file: CampaignFile) -> None:
    """Print the Chaos Mesh objects a cluster run would apply, as a YAML stream."""
    from opsllm.lab.planner import plan
    from opsllm.spec.chaosmesh import render, to_yaml

    campaign = _load(file)
    docs = [to_yaml(render(i, campaign.spec.system.namespace)) for i in plan(campaign)]
    sys.stdout.write("---\n".join(docs))


@campaign_app.command("run")
def campaign_run(
    file: CampaignFile,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder; a rerun resumes there.")],
    crds: Crds = None,
    limit: Annotated[int | None, typer.Option(help="Run only the first N injections.", min=1)] = None,
    fuse: Annotated[bool, typer.Option(help="Fuse each window into OUT/dataset as it finishes.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    split_by: SplitByOption = None,
    time_block: TimeBlockOption = None,
    memory_budget: MemoryBudget = "8GiB",
) -> None:
    """Run a campaign on the twin: one raw telemetry window, label and Chaos Mesh object per injection."""
    campaign = _load(file)
    from opsllm.lab.campaign import run_campaign
    from opsllm.lab.planner import plan

    try:
        # Before any work: a window too long for this machine was an out-of-memory kill halfway through.
        _estimate_line(file, campaign, plan(campaign)[:limit], memory_budget)
    except UsageError as exc:
        _fail(exc)

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[current]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err, disable=quiet)
    try:
        with progress:
            task = progress.add_task(campaign.metadata.name, total=None, current="planning")

            def step(n: int, total: int, inj, skipped: bool) -> None:
                progress.update(task, total=total, completed=n,
                                current=f"{inj.id}{' (done before)' if skipped else ''}")

            result = run_campaign(campaign, out_dir, crd_path=crds, limit=limit, fuse=fuse, on_progress=step,
                                  split_by=split_by, time_block=time_block)
    except (UsageError, OperationalError) as exc:
        _fail(exc)
    out.print(f"{len(result.written)} injections written, {len(result.skipped)} already there, "
              f"{result.total} planned -> {result.out}")


@app.command()
def fuse(
    window: Annotated[Path, typer.Argument(help="A raw telemetry window folder.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="The whole sample as JSON.")] = False,
) -> None:
    """Print the fused RCA sample of one raw window (its text rendering, or the sample as JSON)."""
    from opsllm.fusion import fuse_window

    try:
        sample = fuse_window(window)
    except (UsageError, OperationalError) as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(sample.model_dump_json(indent=2) + "\n")
        return
    sys.stdout.write(sample.text + "\n")
    p = sample.provenance
    ratio = 1 - p.fused_bytes / p.raw_bytes if p.raw_bytes else float("nan")
    err.print(f"{p.raw_bytes} raw bytes -> {p.fused_bytes} fused bytes (compression {ratio:.4f})")


_REPORT_COLUMNS = ("component_acc", "type_acc", "level_acc", "ac@1", "ac@3", "avg@5")


def _write_report(folder: Path, result: dict) -> None:
    """report.json (every figure) and report.md (the table) in ``folder``, each written atomically."""
    from opsllm.files import write_json_atomic, write_text_atomic

    rows = [(result["predictor"], result), ("constant guess", result["constant_guess"])]
    rows += [(k, v) for k, v in result["per_kind"].items()]
    rows += [(k, v) for k, v in result["per_fault_type"].items()]
    lines = [f"# RCA evaluation: {result['predictor']} on {result['source']}", "",
             "| | samples | " + " | ".join(_REPORT_COLUMNS) + " |", "|---" * (len(_REPORT_COLUMNS) + 2) + "|"]
    lines += [f"| {name} | {r['samples']} | " + " | ".join(f"{r[k]:.3f}" for k in _REPORT_COLUMNS) + " |"
              for name, r in rows]
    try:
        write_json_atomic(folder / "report.json", result)
        write_text_atomic(folder / "report.md", "\n".join(lines) + "\n")
    except OSError as exc:
        _fail(OperationalError(f"cannot write the report to {folder}: {exc}"))


@eval_app.command("rca")
def eval_rca(
    source: Annotated[Path, typer.Argument(help="A dataset folder (manifest.json) or a campaign output folder "
                                           "(injections/*/window).", show_default=False)],
    predictor: Annotated[str, typer.Option(help="baseline: the evidence ranker; model=PATH: a trained model, "
                                           "adapter or training run folder (batched transformers inference); "
                                           "endpoint=FILE: an OpenAI-compatible server described by FILE (an "
                                           "endpoint spec, or an eval config with predictor.endpoint).")
                         ] = "baseline",
    batch_size: Annotated[int, typer.Option(min=1, help="model=PATH: prompts per generation batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="model=PATH: longest answer in tokens.")] = 512,
    split: Annotated[str, typer.Option(help="heldout (test, as exports name it), train or all (datasets, and "
                                       "campaign folders with a dataset).")] = "all",
    raw: Annotated[bool, typer.Option("--raw", help="Campaign folders: fuse the windows anew and rank on every "
                                      "anomaly of the raw window instead of the fused sample's capped "
                                      "evidence.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON on stdout (progress "
                                          "stays on stderr).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    report: Annotated[Path | None, typer.Option("--out", help="Also write the report to this folder "
                                                "(report.json and report.md).")] = None,
    errors: Annotated[Path | None, typer.Option("--errors", help="Also write every prediction beside its truth "
                                                "to this JSONL file, one line per labelled sample.",
                                                show_default=False)] = None,
) -> None:
    """Score a root-cause predictor: component, type and level accuracy, ac@1, ac@3, avg@5, per Chaos Mesh
    kind and per fault type, with a constant guess beside them. A campaign folder is scored from its
    dataset where that holds every window as it is now, else (and with --raw) from its windows fused anew."""
    from opsllm.data.store import check_split
    from opsllm.evaluation.rca import prediction_record, score
    from opsllm.evaluation.sources import load_samples, predictor_named, progress_of
    from opsllm.termination import write_termination_log

    # Progress goes to stderr even with --json, which keeps stdout to itself: a long run must not look hung.
    try:
        split = check_split(split, field="--split", allow_all=True)
        if errors is not None and errors.is_dir():
            # Found before any prediction: a model run must not end in an error about where to write.
            raise UsageError(f"--errors {errors} is a folder; give the path of a JSONL file to write")
        options = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "console": err,
                   "progress": not quiet} if predictor.startswith(("model=", "endpoint=")) else {}
        chosen = predictor_named(predictor, **options)
        samples = load_samples(source, split=split, raw=raw, progress=not quiet, console=err)
        records: list[dict] = []
        labelled = sum(s.label is not None for s in samples)
        with progress_of(err, not quiet, "scoring samples", labelled) as advance:
            def seen(sample, prediction) -> None:
                if errors is not None:
                    records.append(prediction_record(sample, prediction))
                advance()

            result = score(samples, chosen, on_prediction=seen)
    except (UsageError, OperationalError) as exc:
        _fail(exc)
    write_termination_log(result)
    result["predictor"] = predictor
    result["source"] = str(source)
    if report is not None:
        _write_report(report, result)
    if errors is not None:
        from opsllm.files import write_text_atomic

        try:
            write_text_atomic(errors, "".join(json.dumps(r) + "\n" for r in records))
        except OperationalError as exc:
            _fail(exc)
        except OSError as exc:
            _fail(OperationalError(f"cannot write the predictions to {errors}: {exc}"))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    out.print(_figures_table("predictor", [(predictor, result), ("constant guess", result["constant_guess"])]))
    out.print(_figures_table("kind", list(result["per_kind"].items())))
    out.print(_figures_table("fault type", list(result["per_fault_type"].items())))
    out.print("type: component and fault type both right; level: the level right; ac@k: the root cause among "
              "the first k (ac@1 is the component accuracy); avg@5: the mean of ac@1..ac@5", highlight=False)


# Short headers, and no component_acc column (it is ac@1), keep the longest fault type and kind names (20
# characters) whole in 80 columns; a longer name (an imported dataset's) folds rather than losing its end.
_TABLE_FIGURES = (("type", "type_acc"), ("level", "level_acc"), ("ac@1", "ac@1"), ("ac@3", "ac@3"),
                  ("avg@5", "avg@5"))


def _figures_table(first: str, rows: list[tuple[str, dict]]) -> Table:
    table = Table(Column(first, overflow="fold"), Column("samples", justify="right", no_wrap=True),
                  *(Column(header, justify="right", no_wrap=True) for header, _ in _TABLE_FIGURES))
    for name, r in rows:
        table.add_row(name, str(r["samples"]), *(f"{r[key]:.3f}" for _, key in _TABLE_FIGURES))
    return table


def _when(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{name} {text!r} is not an RFC 3339 time; write e.g. 2026-01-05T09:00:00Z") from exc
    if value.tzinfo is None:
        raise UsageError(f"{name} {text!r} has no time zone; add Z for UTC")
    return value.astimezone(UTC)


@app.command()
def collect(
    config: Annotated[Path, typer.Option("--config", help="A CollectorConfig YAML file.")],
    start: Annotated[str, typer.Option(help="Window start, RFC 3339 (e.g. 2026-01-05T09:00:00Z).")],
    end: Annotated[str, typer.Option(help="Window end, RFC 3339.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder of the raw window to write.")],
) -> None:
    """Collect one raw telemetry window from Prometheus, Jaeger and Loki or Elasticsearch."""
    from opsllm.collectors.window import collect_window
    from opsllm.spec.collect import load_collector_config

    try:
        spec = load_collector_config(config).spec
        t0, t1 = _when(start, "--start"), _when(end, "--end")
        path = collect_window(spec, t0, t1, out_dir, require_data=True)
    except ValueError as exc:
        _fail(UsageError(str(exc)))
    except (UsageError, OperationalError) as exc:
        _fail(exc)
    from opsllm.window import read_window

    window = read_window(path)
    gaps = "; ".join(f"{p.modality}{f' ({p.component})' if p.component else ''}: {p.reason}"
                     for p in window.meta.partial)
    out.print(f"window written -> {path} ({len(window.metrics)} samples, {len(window.spans)} spans, "
              f"{len(window.logs)} log lines){' partial: ' + gaps if gaps else ''}")


@lab_app.command("publish")
def lab_publish(
    window: Annotated[Path, typer.Argument(help="A raw window folder (e.g. a campaign's injections/*/window).",
                                           show_default=False)],
    prometheus_tsdb: Annotated[Path | None, typer.Option(help="Backfill the metrics into this Prometheus TSDB "
                                                         "folder (promtool).")] = None,
    jaeger: Annotated[str | None, typer.Option(help="OTLP/HTTP traces endpoint, e.g. "
                                               "http://127.0.0.1:4318/v1/traces.")] = None,
    loki: Annotated[str | None, typer.Option(help="Loki base URL: push the logs.")] = None,
    elasticsearch: Annotated[str | None, typer.Option(help="Elasticsearch base URL: bulk-index the logs.")] = None,
    index: Annotated[str, typer.Option(help="Elasticsearch index.")] = "logs-opsllm",
) -> None:
    """Publish a twin window into real backends, so the collectors can read it back."""
    from opsllm.window import read_window

    if not any((prometheus_tsdb, jaeger, loki, elasticsearch)):
        _fail(UsageError("name at least one target: --prometheus-tsdb, --jaeger, --loki or --elasticsearch"))
    try:
        w = read_window(window)
        namespace = w.meta.topology.get("namespace", "online-boutique")
        if prometheus_tsdb:
            from opsllm.collectors.prometheus import backfill, publish_metrics

            backfill(publish_metrics(w.metrics, out_dir=prometheus_tsdb.parent), prometheus_tsdb)
            out.print(f"metrics -> {prometheus_tsdb}")
        if jaeger:
            from opsllm.collectors.jaeger import publish_spans

            publish_spans(w.spans, jaeger)
            out.print(f"spans -> {jaeger}")
        if loki:
            from opsllm.collectors.loki import push_logs

            push_logs(w.logs, loki, namespace=namespace)
            out.print(f"logs -> {loki}")
        if elasticsearch:
            from opsllm.collectors.elasticsearch import bulk_logs

            bulk_logs(w.logs, elasticsearch, index=index, namespace=namespace)
            out.print(f"logs -> {elasticsearch}/{index}")
    except (UsageError, OperationalError) as exc:
        _fail(exc)


@lab_app.command("simulate")
def lab_simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder of the raw window to write.")],
    duration: Annotated[str, typer.Option(help="Window length, e.g. 15m.")] = "15m",
    seed: int = 0,
    difficulty: Annotated[str, typer.Option(help="easy, mid or hard.")] = "mid",
    start: Annotated[str, typer.Option(help="Window start, RFC 3339.")] = "2026-01-05T09:00:00Z",
) -> None:
    """Write one fault-free window of the twin."""
    from opsllm.lab.twin import Twin
    from opsllm.spec.duration import check_limit, parse_duration
    from opsllm.window import write_window

    try:
        seconds = parse_duration(duration)
        if seconds < 1:
            raise ValueError(f"{duration!r} is shorter than the twin's one-second step; give at least 1s, e.g. 15m")
        check_limit(seconds)  # the twin holds the whole window in memory
    except ValueError as exc:
        _fail(UsageError(f"--duration: {exc}"))
    try:
        t0 = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(UTC)
        twin = Twin(difficulty=difficulty)
    except ValueError as exc:
        _fail(UsageError(str(exc)))
    telemetry = twin.simulate(t0, t0 + timedelta(seconds=seconds), seed=seed)
    try:
        write_window(out_dir, telemetry.meta, telemetry.metrics, telemetry.logs, telemetry.spans)
    except (UsageError, OperationalError) as exc:
        _fail(exc)
    out.print(f"window written -> {out_dir} ({telemetry.metrics.num_rows} samples, "
              f"{telemetry.spans.num_rows} spans, {telemetry.logs.num_rows} log lines)")


if __name__ == "__main__":
    app()


@operator_app.command("run")
def operator_run(
    config: Annotated[Path | None, typer.Option("--config", help="Operator settings (YAML); default "
                                                "$OPSLLM_OPERATOR_CONFIG, else built-in defaults.")] = None,
    kubeconfig: Annotated[Path | None, typer.Option("--kubeconfig", help="Kubeconfig to use; default: the "
                                                    "pod's service account, else ~/.kube/config.")] = None,
    namespace: Annotated[list[str] | None, typer.Option("--namespace", "-n", help="Watch only this namespace "
                                                        "(repeatable); default: all.")] = None,
    liveness: Annotated[str | None, typer.Option("--liveness", help="Serve Kopf's liveness probe at this URL, "
                                                 "e.g. http://0.0.0.0:8081/healthz.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator: InjectionCampaigns into Injections, chaos objects and samples; TrainingRuns into Jobs."""
    from opsllm.errors import OpsLLMError
    from opsllm.operator.run import run

    try:
        run(config=config, kubeconfig=kubeconfig, namespaces=namespace, liveness=liveness, verbose=verbose)
    except OpsLLMError as exc:
        _fail(exc)
