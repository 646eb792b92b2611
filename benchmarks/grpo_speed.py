"""GRPO training speed: optimiser steps/s, generated tokens/s and peak memory, against plain generation.

Each GRPO run is ``opsllm.training.grpo.train_grpo`` on the RCA prompts of a 25-sample smoke dataset
(LoRA rank 32 on all linear layers, 16 completions per step = 2 prompts x 8 generations, outcome reward
only), in its own process, so its peak memory is its own. The first 2 steps are warm-up and not counted.

- step time: wall time between the metrics.jsonl rows of the first and the last counted step (a whole
  optimiser step: generation, reward, loss, backward, optimiser, logging);
- generation: TRL's ``GRPOTrainer._generate_single_turn`` wrapped with a timer (with vLLM it includes the
  weight sync to vLLM); tokens are the completion tokens it returns, up to and including the first EOS, as
  TRL counts them for ``completions/mean_length``;
- the baseline, measured in the same run on the same prompts: plain ``model.generate`` of the base model
  (no LoRA, no trainer) with the same sampling settings, batch shape (prompts x generations) and maximum
  length, as many batches as counted GRPO steps; the median of ``--repeats`` passes. A second row is the
  same with the GRPO runs' LoRA adapters attached and unmerged, as the policy generates inside TRL: it
  splits the gap between GRPO's generation and plain generation into the adapters' part and the trainer's.

CPU (always, one thread): a tiny random Qwen2 (2 layers, width 128) with a tokenizer trained on the
prompts, 32-token completions; GRPO with beta 0 and with beta 0.04 (the KL term adds a reference forward
pass: for a PEFT model, the model with its adapters off). GPU (when torch sees one): a random model shaped
like Qwen2.5-0.5B in bf16 with the tiny tokenizer, ``--completion-length`` tokens, generation with
transformers and, when vllm imports, with colocated vLLM.

    python benchmarks/grpo_speed.py [--steps 12] [--gpu-steps 10] [--completion-length 256] [--repeats 3]
                                    [--only cpu|gpu] [--json]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from timing import timed

from opsllm.training.examples import grpo_examples

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "examples" / "campaigns" / "smoke.yaml"
WARMUP = 2
NUM_GENERATIONS = 8
BATCH = 16                        # completions per optimiser step
PROMPTS = BATCH // NUM_GENERATIONS
TEMPERATURE = 0.7
MAX_PROMPT_CHARS = 600
LORA_RANK, LORA_ALPHA = 32, 64
err = Console(stderr=True)


def dataset_path(tmp: Path, given: str | None) -> Path:
    """``--dataset``, else runs/smoke/dataset when present, else a fresh smoke campaign in ``tmp``."""
    if given:
        return Path(given)
    existing = ROOT / "runs" / "smoke" / "dataset"
    if (existing / "manifest.json").is_file():
        return existing
    from opsllm.lab.campaign import run_campaign
    from opsllm.spec.campaign import load_campaign

    err.print("making the smoke dataset (about 10 s)")
    run_campaign(load_campaign(SMOKE), tmp / "smoke")
    return tmp / "smoke" / "dataset"


def data_spec(dataset: Path) -> Any:
    from opsllm.spec.training import DataSpec

    return DataSpec(path=str(dataset), split="all", max_prompt_chars=MAX_PROMPT_CHARS)


def make_tiny(dataset: Path, path: Path) -> Path:
    from opsllm.models.local import tiny_qwen2

    texts = [m["content"] for row in grpo_examples(data_spec(dataset)) for m in row["prompt"]]
    return tiny_qwen2(path, texts=texts)


def make_qwen05b_shaped(tiny: Path, path: Path) -> Path:
    """A random bf16 model shaped like Qwen2.5-0.5B, with the tiny model's tokenizer and special tokens."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    small = Qwen2Config.from_pretrained(tiny)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=small.bos_token_id, eos_token_id=small.eos_token_id,
                         pad_token_id=small.pad_token_id)
    assert config.vocab_size >= len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig.from_pretrained(tiny)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


# ---------------------------------------------------------------------------------------------- GRPO runs


def grpo_config(model: Path, dataset: Path, out: Path, *, steps: int, beta: float, length: int, device: str,
                generation: str = "transformers") -> dict[str, Any]:
    return {"stage": "grpo", "model": {"path": str(model)}, "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA},
            "data": {"path": str(dataset), "split": "all", "max_prompt_chars": MAX_PROMPT_CHARS},
            "train": {"output_dir": str(out), "max_steps": steps, "learning_rate": 3e-3, "device": device,
                      "per_device_batch_size": BATCH, "logging_steps": 1, "save_steps": 100_000,
                      "lr_scheduler": "constant"},
            "grpo": {"num_generations": NUM_GENERATIONS, "batch_size": BATCH, "max_completion_length": length,
                     "beta": beta, "temperature": TEMPERATURE, "generation": generation},
            "reward": {"process": False}, "curriculum": {"switch": "never", "plateau": {"metric": "outcome"}}}


def grpo_run(raw: dict[str, Any]) -> dict[str, Any]:
    """Train one config with generation timed; the figures of the steps after the warm-up."""
    import torch
    from trl import GRPOTrainer

    from opsllm.spec.training import parse_training_config
    from opsllm.training.grpo import train_grpo
    from opsllm.training.outputs import read_metrics

    config = parse_training_config(raw, expect="grpo")
    cuda = config.train.device == "cuda"
    calls: list[tuple[int, float, int]] = []   # (global step when called, seconds, completion tokens)
    original = GRPOTrainer._generate_single_turn

    def timed_generation(self, *args, **kwargs):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        completion_ids, logprobs = original(self, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        calls.append((self.state.global_step, time.perf_counter() - t0, sum(len(c) for c in completion_ids)))
        return completion_ids, logprobs

    GRPOTrainer._generate_single_turn = timed_generation
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            train_grpo(config, console=err, progress=True)
    finally:
        GRPOTrainer._generate_single_turn = original
    rows = {r["step"]: r for r in read_metrics(Path(config.train.output_dir)) if "step_time" in r}
    steps = config.train.max_steps
    if steps not in rows or WARMUP not in rows:
        raise RuntimeError(f"metrics.jsonl lacks the rows of steps {WARMUP} and {steps}: {sorted(rows)}")
    wall = rows[steps]["time"] - rows[WARMUP]["time"]
    counted = [c for c in calls if c[0] >= WARMUP]   # step k generates while global_step is k - 1
    gen_s, tokens = sum(c[1] for c in counted), sum(c[2] for c in counted)
    counted_steps = steps - WARMUP
    return {
        "steps": counted_steps,
        "steps_per_s": counted_steps / wall,
        "s_per_step": wall / counted_steps,
        "trl_step_time_s": sum(rows[s]["step_time"] for s in range(WARMUP + 1, steps + 1)) / counted_steps,
        "generation_s_per_step": gen_s / counted_steps,
        "completion_tokens_per_step": tokens / counted_steps,
        "generation_tokens_per_s": tokens / gen_s,
        "generation_share": gen_s / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_alloc_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def in_worker(raw: dict[str, Any], tmp: Path, name: str) -> dict[str, Any]:
    """``grpo_run`` in a fresh process (its own peak memory, no state left by the run before)."""
    spec, result = tmp / f"{name}.json", tmp / f"{name}.result.json"
    spec.write_text(json.dumps(raw))
    proc = subprocess.run([sys.executable, __file__, "--worker", str(spec), "--worker-out", str(result)],
                          stdout=sys.stderr)
    figures = json.loads(result.read_text()) if result.is_file() else {"error": f"exit {proc.returncode}"}
    if "error" in figures:
        raise RuntimeError(figures["error"])
    return figures


# -------------------------------------------------------------------------------------------- the baseline


def plain_generate(model_path: Path, dataset: Path, *, batches: int, length: int, device: str,
                   repeats: int, lora: bool = False) -> dict[str, Any]:
    """``model.generate`` on ``batches`` batches of PROMPTS prompts x NUM_GENERATIONS, as TRL samples them.

    With ``lora``, the model carries the GRPO runs' (unmerged) LoRA adapters, as TRL's policy does when it
    generates with transformers: the difference between the two rows is the adapters' cost."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    if lora:
        from peft import get_peft_model

        from opsllm.spec.training import LoRASpec
        from opsllm.training.runtime import lora_config

        model = get_peft_model(model, lora_config(LoRASpec(rank=LORA_RANK, alpha=LORA_ALPHA))).eval()
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id not in eos:
        eos = [tokenizer.eos_token_id, *eos]
    config = GenerationConfig(max_new_tokens=length, do_sample=True, temperature=TEMPERATURE, top_p=1.0, top_k=0,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, disable_compile=True)
    rows = grpo_examples(data_spec(dataset))
    prompts = [tokenizer(tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for r in rows]
    eos_t = torch.tensor(eos, device=device)

    def one_batch(b: int) -> int:
        ids = [prompts[(b * PROMPTS + i) % len(prompts)] for i in range(PROMPTS) for _ in range(NUM_GENERATIONS)]
        width = max(map(len, ids))
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)[:, width:]
        is_eos = torch.isin(out, eos_t)
        lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, out.shape[1])
        return int(lengths.sum())

    def one_pass() -> int:
        torch.manual_seed(0)
        tokens = sum(one_batch(b) for b in range(batches))
        if device == "cuda":
            torch.cuda.synchronize()
        return tokens

    one_batch(0)   # warm-up
    seconds, tokens = timed(one_pass, repeats)
    model = None
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"batches": batches, "s_per_batch": seconds / batches, "completion_tokens_per_batch": tokens / batches,
            "tokens_per_s": tokens / seconds}


# --------------------------------------------------------------------------------------------------- parts


def cpu_part(args: argparse.Namespace, tmp: Path, dataset: Path, tiny: Path) -> dict[str, Any]:
    length = 32
    base = plain_generate(tiny, dataset, batches=args.steps - WARMUP, length=length, device="cpu",
                          repeats=args.repeats)
    with_lora = plain_generate(tiny, dataset, batches=args.steps - WARMUP, length=length, device="cpu",
                               repeats=args.repeats, lora=True)
    runs = {}
    for beta in (0.0, 0.04):
        name = f"cpu-beta{beta}"
        err.print(f"[bold]{name}[/]: {args.steps} GRPO steps")
        runs[f"beta {beta:g}"] = in_worker(grpo_config(tiny, dataset, tmp / name, steps=args.steps, beta=beta,
                                                     length=length, device="cpu"), tmp, name)
    b0, kl = runs["beta 0"], runs["beta 0.04"]
    return {"model": "tiny Qwen2 (2 layers, width 128, vocab 1031), float32, 1 thread",
            "completion_length": length, "plain_generate": base, "plain_generate_lora": with_lora, "grpo": runs,
            "grpo_over_plain_tokens_per_s": b0["generation_tokens_per_s"] / base["tokens_per_s"],
            "kl_over_no_kl_s_per_step": kl["s_per_step"] / b0["s_per_step"]}


def gpu_part(args: argparse.Namespace, tmp: Path, dataset: Path, tiny: Path) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "torch sees no GPU"}
    length = args.completion_length
    model = make_qwen05b_shaped(tiny, tmp / "qwen05b-shaped")
    base = plain_generate(model, dataset, batches=args.gpu_steps - WARMUP, length=length, device="cuda",
                          repeats=args.repeats)
    with_lora = plain_generate(model, dataset, batches=args.gpu_steps - WARMUP, length=length, device="cuda",
                               repeats=args.repeats, lora=True)
    runs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    check = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True)
    backends = ["transformers"]
    if check.returncode == 0:
        backends.append("vllm")
    else:
        lines = [line for line in check.stderr.strip().splitlines() if line.strip()]
        skipped["vllm"] = "import vllm failed: " + (lines[-1] if lines else f"exit {check.returncode}")
    for backend in backends:
        name = f"gpu-{backend}"
        err.print(f"[bold]{name}[/]: {args.gpu_steps} GRPO steps")
        try:
            runs[backend] = in_worker(grpo_config(model, dataset, tmp / name, steps=args.gpu_steps, beta=0.0,
                                                  length=length, device="cuda", generation=backend), tmp, name)
        except RuntimeError as exc:
            skipped[backend] = f"run failed: {exc}"
    return {"model": f"random Qwen2.5-0.5B shape, bf16, on {torch.cuda.get_device_name()}",
            "completion_length": length, "plain_generate": base, "plain_generate_lora": with_lora, "grpo": runs,
            "skipped": skipped,
            "grpo_over_plain_tokens_per_s": {k: r["generation_tokens_per_s"] / base["tokens_per_s"]
                                             for k, r in runs.items()}}


# ------------------------------------------------------------------------------------------------- output


def table(title: str, part: dict[str, Any]) -> Table:
    t = Table(title=f"{title}: {part['model']}, {part['completion_length']}-token completions, "
                    f"{BATCH} per step ({PROMPTS} prompts x {NUM_GENERATIONS})")
    for col in ("run", "steps/s", "s/step", "gen s/step", "gen share", "tok/step", "gen tok/s", "vs plain",
                "peak RSS MiB", "GPU MiB"):
        t.add_column(col, justify="left" if col == "run" else "right")
    base = part["plain_generate"]
    for name, r in part["grpo"].items():
        gpu = r["peak_gpu_alloc_mib"]
        t.add_row(f"GRPO {name}", f"{r['steps_per_s']:.3f}", f"{r['s_per_step']:.2f}",
                  f"{r['generation_s_per_step']:.2f}", f"{r['generation_share']:.0%}",
                  f"{r['completion_tokens_per_step']:.0f}", f"{r['generation_tokens_per_s']:.0f}",
                  f"{r['generation_tokens_per_s'] / base['tokens_per_s']:.2f}x", f"{r['peak_rss_mib']:.0f}",
                  "-" if gpu is None else f"{gpu:.0f}")
    for name, b in (("plain generate", base), ("plain generate, LoRA", part["plain_generate_lora"])):
        t.add_row(name, "-", "-", f"{b['s_per_batch']:.2f}", "-", f"{b['completion_tokens_per_batch']:.0f}",
                  f"{b['tokens_per_s']:.0f}", f"{b['tokens_per_s'] / base['tokens_per_s']:.2f}x", "-", "-")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="GRPO steps per CPU run (the first 2 are warm-up)")
    parser.add_argument("--gpu-steps", type=int, default=10, help="GRPO steps per GPU run")
    parser.add_argument("--completion-length", type=int, default=256, help="completion tokens on the GPU")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the plain-generate baseline (median)")
    parser.add_argument("--dataset", help="an RCA dataset folder; default runs/smoke/dataset or a fresh one")
    parser.add_argument("--only", choices=("cpu", "gpu"), help="run one part (a GPU lease is short: --only gpu)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        try:
            result = grpo_run(json.loads(Path(args.worker).read_text()))
        except Exception as exc:
            Path(args.worker_out).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}))
            raise
        Path(args.worker_out).write_text(json.dumps(result))
        return
    if min(args.steps, args.gpu_steps) <= WARMUP:
        parser.error(f"--steps and --gpu-steps must exceed the {WARMUP} warm-up steps")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name, contextlib.redirect_stdout(sys.stderr):
        tmp = Path(name)
        dataset = dataset_path(tmp, args.dataset)
        tiny = make_tiny(dataset, tmp / "tiny")
        figures: dict[str, Any] = {"dataset": str(dataset), "prompts": len(grpo_examples(data_spec(dataset))),
                                   "warmup_steps": WARMUP}
        if args.only != "gpu":
            figures["cpu"] = cpu_part(args, tmp, dataset, tiny)
        if args.only != "cpu":
            try:
                figures["gpu"] = gpu_part(args, tmp, dataset, tiny)
            except Exception as exc:   # the CPU figures stand; say why the GPU ones are missing
                figures["gpu"] = {"skipped": f"failed: {type(exc).__name__}: {exc}"[:500]}
    figures["wall_s"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(figures))
        return

    out = Console(width=None if sys.stdout.isatty() else 132)
    cpu, gpu = figures.get("cpu"), figures.get("gpu")
    if cpu:
        out.print(table("CPU", cpu))
        b0 = cpu["grpo"]["beta 0"]
        out.print(f"CPU: generation is {b0['generation_share']:.0%} of a GRPO step (beta 0); GRPO generation runs "
                  f"at {cpu['grpo_over_plain_tokens_per_s']:.2f}x the tokens/s of plain model.generate; beta 0.04 "
                  f"(KL, reference forward) / beta 0 step time: {cpu['kl_over_no_kl_s_per_step']:.2f}x")
    if gpu and "plain_generate" not in gpu:
        out.print(f"GPU part skipped: {gpu['skipped']}")
    elif gpu:
        out.print(table("GPU", gpu))
        for backend, why in gpu["skipped"].items():
            out.print(f"GPU {backend} generation skipped: {why}")
        for backend, ratio in gpu["grpo_over_plain_tokens_per_s"].items():
            out.print(f"GPU {backend}: generation is {gpu['grpo'][backend]['generation_share']:.0%} of a GRPO step; "
                      f"{ratio:.2f}x the tokens/s of plain model.generate")
    out.print(f"{args.steps - WARMUP} counted CPU steps, {args.gpu_steps - WARMUP} GPU, after {WARMUP} warm-up; "
              f"baseline: median of {args.repeats} passes; {figures['prompts']} prompts from "
              f"{figures['dataset']}; {figures['wall_s']:.0f} s in all")


if __name__ == "__main__":
    main()
