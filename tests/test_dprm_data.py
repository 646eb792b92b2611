"""`opsllm dprm build-data` against a loopback OpenAI-compatible server.

The generator and the judge are capable LLMs, which cannot run here; :class:`doubles.OpenAIDouble` stands in
for them, speaking the chat-completions protocol through the official ``openai`` client, with answers
scripted below: a generator whose chains name the label, and a judge whose verdict on a chain is a function
of the chain's text, so that every score can be checked against the verdict it came from.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from doubles import OpenAIDouble
from rich.console import Console

from opsllm.data.prompt import format_answer, user_prompt
from opsllm.data.store import DatasetStore
from opsllm.errors import UsageError
from opsllm.evaluation.sources import load_samples
from opsllm.lab.campaign import run_campaign
from opsllm.models.endpoint import ChatEndpoint, EndpointError
from opsllm.spec.campaign import load_campaign
from opsllm.spec.training import DPRMDataConfig, EndpointSpec
from opsllm.training.dprm_data import build_dprm_data, default_cache_dir
from opsllm.training.rubric import JUDGE_REMINDER, RUBRICS, Verdict, generator_messages, judge_messages, parse_verdict

REPO = Path(__file__).resolve().parents[1]
GEN, JUDGE = "gen-model", "judge-model"
CASES = 3


# ---- the cases and the scripted models ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory) -> Path:
    """The first injections of the smoke campaign, run on the twin and fused: real RCA samples."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    run_campaign(load_campaign(REPO / "examples" / "campaigns" / "smoke.yaml"), out, limit=CASES + 1)
    return out / "dataset"


def points_for(chain: str) -> dict[str, int]:
    """The judge's verdict on a chain: a fixed function of its text, different across chains."""
    digest = hashlib.sha256(chain.encode()).digest()
    return {name: digest[i] % 2 for i, name in enumerate(RUBRICS)}


def chain_of(request: dict[str, Any]) -> str:
    user = request["messages"][1]["content"]
    return user.split("## The analyst's reasoning chain\n", 1)[1].split("\n\n## Rubrics", 1)[0]


class Models:
    """The responder of the double: a generator (model GEN) and a judge (model JUDGE)."""

    def __init__(self) -> None:
        self.garbage: dict[str, int] = {}  # chain-text marker -> judge replies to spoil (1: first, 2: both)
        self.draws: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> list[str]:
        if request["model"] == GEN:
            user = request["messages"][-1]["content"]
            component = user.split("The correct root cause of this incident is component ", 1)[1].split(" ", 1)[0]
            fault = user.split(" with fault type ", 1)[1].split(". ", 1)[0]
            case = hashlib.sha256(user.encode()).hexdigest()[:8]
            with self.lock:  # a sampler: a second request for the same case draws other chains
                draw = self.draws[case] = self.draws.get(case, -1) + 1
            return [format_answer(component, fault, f"case {case} draw {draw} chain {i}: errors start at {component}")
                    for i in range(request["n"])]
        assert request["model"] == JUDGE and request["temperature"] == 0
        chain = chain_of(request)
        retry = request["messages"][-1]["content"] == JUDGE_REMINDER
        for marker, spoiled in self.garbage.items():
            if marker in chain and (not retry or spoiled == 2):
                return ["I think this chain is rather good overall."]
        verdict = {**points_for(chain), "rationale": "checked against the evidence"}
        return [f"Here is my grading:\n```json\n{json.dumps(verdict)}\n```"]


@pytest.fixture
def models() -> Models:
    return Models()


@pytest.fixture
def server(models: Models):
    with OpenAIDouble(models, models=[GEN, JUDGE], retry_after_ms=1) as double:
        yield double


def config(dataset: Path, base_url: str, output: Path, **extra: Any) -> DPRMDataConfig:
    return DPRMDataConfig.model_validate({
        "data": {"path": str(dataset), "split": "all", "limit": CASES},
        "generator": {"base_url": base_url, "model": GEN}, "judge": {"base_url": base_url, "model": JUDGE},
        "output": str(output), **extra})


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- building ------------------------------------------------------------------------------------------------

def test_build_writes_every_chain_of_every_case_scored_by_its_verdict(smoke_dataset, server, tmp_path):
    out = tmp_path / "chains.jsonl"
    summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)

    samples = load_samples(smoke_dataset)[:CASES]
    rows = read_rows(out)
    assert len(rows) == CASES * 5
    assert [(r["id"], r["chain_index"]) for r in rows] == [(s.id, i) for s in samples for i in range(5)]
    scores = set()
    for row in rows:
        sample = next(s for s in samples if s.id == row["id"])
        assert row["prompt"] == user_prompt(sample)
        assert (row["component"], row["fault_type"]) == (sample.label.component, sample.label.fault_type)
        assert row["rubrics"] == points_for(row["chain"]) and list(row["rubrics"]) == list(RUBRICS)
        assert row["score"] == sum(points_for(row["chain"]).values())
        assert row["answer_ok"] is True and row["case_rows"] == 5
        assert (row["generator"], row["judge"]) == (GEN, JUDGE)
        assert row["rationale"] == "checked against the evidence"
        scores.add(row["score"])
    assert len(scores) > 1, "the scripted judge must give different scores, or the check above proves little"
    assert len({r["chain"] for r in rows}) == len(rows)

    sent = server.chat_requests()
    generated = [r for r in sent if r["model"] == GEN]
    assert len(generated) == CASES and len(sent) == CASES + CASES * 5
    assert all(r["n"] == 5 and r["temperature"] == 0.7 and r["max_tokens"] == 1024 for r in generated)
    assert summary.cases == CASES and summary.cases_resumed == 0
    assert (summary.chains_written, summary.chains_skipped) == (CASES * 5, 0)
    assert (summary.requests_sent, summary.cache_hits) == (len(sent), 0)
    assert default_cache_dir(out) == tmp_path / "chains.jsonl.cache" and default_cache_dir(out).is_dir()


def test_rerun_sends_nothing_and_writes_nothing(smoke_dataset, server, tmp_path):
    out = tmp_path / "chains.jsonl"
    build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    before, sent = out.read_bytes(), len(server.requests)

    summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    assert out.read_bytes() == before
    assert len(server.requests) == sent
    assert (summary.cases_resumed, summary.chains_written, summary.requests_sent) == (CASES, 0, 0)


def test_a_deleted_output_is_rebuilt_from_the_cache_alone(smoke_dataset, server, tmp_path):
    out = tmp_path / "chains.jsonl"
    build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    before, sent = out.read_bytes(), len(server.requests)
    out.unlink()

    summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    assert out.read_bytes() == before
    assert len(server.requests) == sent and summary.requests_sent == 0
    assert summary.cache_hits == CASES + CASES * 5 and summary.chains_written == CASES * 5


def test_a_run_killed_mid_write_resumes_without_duplicates(smoke_dataset, server, tmp_path):
    """Every way a crash can cut the file (inside a line, between the lines of a case, between cases)."""
    out = tmp_path / "chains.jsonl"
    build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    whole, sent = out.read_bytes(), len(server.requests)
    ends = [i + 1 for i, b in enumerate(whole) if b == ord("\n")]
    second_case = ends[4]  # the first case is lines 0-4
    cuts = sorted({*ends[3:], *(e - 7 for e in ends[4:]), second_case + 1, len(whole) - 1})
    # A torn line may also have gained a newline (an editor opened the file, say): still not a row.
    torn = [(cut, whole[:cut]) for cut in cuts] + [(e - 7, whole[:e - 7] + b"\n") for e in (ends[7], ends[-1])]
    for cut, text in torn:
        out.write_bytes(text)
        summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
        assert out.read_bytes() == whole, f"cut at byte {cut}"
        resumed = sum(1 for e in ends[4::5] if e <= cut)
        assert summary.cases_resumed == resumed, f"cut at byte {cut}"
    assert len(server.requests) == sent  # all from the cache


def test_unreadable_verdicts_are_asked_again_once_then_skipped(smoke_dataset, models, server, tmp_path):
    models.garbage = {"chain 1:": 1, "chain 3:": 2}  # chain 1: readable after the reminder; chain 3: never
    out = tmp_path / "chains.jsonl"
    summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)

    rows = read_rows(out)
    assert [r["chain_index"] for r in rows] == [0, 1, 2, 4] * CASES
    assert all(r["case_rows"] == 4 and r["score"] == sum(points_for(r["chain"]).values()) for r in rows)
    assert (summary.chains_written, summary.chains_skipped) == (CASES * 4, CASES)
    retries = [r for r in server.chat_requests() if r["messages"][-1]["content"] == JUDGE_REMINDER]
    assert len(retries) == 2 * CASES  # chains 1 and 3 of each case, once each
    assert all(r["messages"][-2] == {"role": "assistant", "content": "I think this chain is rather good overall."}
               for r in retries)

    before, sent = out.read_bytes(), len(server.requests)
    again = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    assert out.read_bytes() == before and len(server.requests) == sent
    assert (again.cases_resumed, again.chains_written) == (CASES, 0)


def test_unlabelled_samples_are_refused_before_any_request(smoke_dataset, server, tmp_path):
    samples = load_samples(smoke_dataset)[:2]
    with DatasetStore.create(tmp_path / "ds", name="partly-labelled") as store:
        store.add([samples[0], samples[1].model_copy(update={"label": None})])
    with pytest.raises(UsageError, match=f"sample {samples[1].id} .*has no label"):
        build_dprm_data(config(tmp_path / "ds", server.base_url, tmp_path / "chains.jsonl"), progress=False)
    assert server.requests == [] and not (tmp_path / "chains.jsonl").exists()
    with pytest.raises(UsageError, match="no label"):
        generator_messages(samples[1].model_copy(update={"label": None}))


def test_an_output_of_other_models_is_refused(smoke_dataset, server, tmp_path):
    out = tmp_path / "chains.jsonl"
    build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    other = config(smoke_dataset, server.base_url, out)
    other.judge.model = "another-judge"
    with pytest.raises(UsageError, match=r"judge 'judge-model'.* 'another-judge'"):
        build_dprm_data(other, progress=False)


def test_a_server_that_ignores_n_is_topped_up(smoke_dataset, server, tmp_path):
    server.max_choices = 1
    out = tmp_path / "chains.jsonl"
    summary = build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    rows = read_rows(out)
    assert [r["chain_index"] for r in rows] == list(range(5)) * CASES and len({r["chain"] for r in rows}) == len(rows)
    generated = [r["n"] for r in server.chat_requests() if r["model"] == GEN]
    assert sorted(generated) == sorted([5, 4, 3, 2, 1] * CASES)  # cases run in parallel: interleaved
    assert summary.requests_sent == CASES * 5 + CASES * 5


def test_progress_bar_reports_the_cases(smoke_dataset, server, tmp_path):
    buffer = io.StringIO()
    build_dprm_data(config(smoke_dataset, server.base_url, tmp_path / "c.jsonl"), progress=True,
                    console=Console(file=buffer, force_terminal=True, width=120))
    assert "dprm chains" in buffer.getvalue() and f"{CASES}/{CASES}" in buffer.getvalue()


def test_a_server_that_keeps_failing_stops_the_build_with_what_to_check(smoke_dataset, server, tmp_path):
    server.fail(503, times=None)
    out = tmp_path / "chains.jsonl"
    with pytest.raises(EndpointError, match=rf"{server.base_url} \(model gen-model\) answered status 503 after 4 "
                                            r"tries.*check the server's log") as info:
        build_dprm_data(config(smoke_dataset, server.base_url, out), progress=False)
    assert info.value.base_url == server.base_url and info.value.status == 503
    assert not out.exists() or out.read_bytes() == b""


# ---- the endpoint ----------------------------------------------------------------------------------------

def spec(base_url: str, **extra: Any) -> EndpointSpec:
    return EndpointSpec(base_url=base_url, model=GEN, **extra)


MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def plain():
    """A server whose every choice is "ok"."""
    with OpenAIDouble(models=[GEN], retry_after_ms=1) as double:
        yield double


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_down_names_the_url_and_what_to_check():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=rf"could not connect to {url} \(model gen-model\).*server is running"
                                            r".*base_url is right") as info:
        ChatEndpoint(spec(url), None, max_retries=0).complete(MESSAGES)
    assert info.value.base_url == url and info.value.model == GEN


@pytest.mark.parametrize("status", [500, 503])
def test_transient_failures_are_retried(plain, status):
    plain.fail(status, times=2)
    endpoint = ChatEndpoint(spec(plain.base_url), None)
    assert endpoint.complete(MESSAGES, n=2) == ["ok", "ok"]
    assert len(plain.requests) == 3 and endpoint.requests_sent == 1


def test_unknown_model_and_bad_key_say_what_to_check(plain, monkeypatch):
    with pytest.raises(EndpointError, match=r"404 \(The model `nope` does not exist.\); check that the model name"):
        ChatEndpoint(EndpointSpec(base_url=plain.base_url, model="nope"), None).complete(MESSAGES)
    plain.api_key = "sekret"
    monkeypatch.setenv("OPSLLM_TEST_KEY", "wrong")
    with pytest.raises(EndpointError, match=r"refused the API key .*environment variable OPSLLM_TEST_KEY"):
        ChatEndpoint(spec(plain.base_url, api_key_env="OPSLLM_TEST_KEY"), None).complete(MESSAGES)
    monkeypatch.setenv("OPSLLM_TEST_KEY", "sekret")
    assert ChatEndpoint(spec(plain.base_url, api_key_env="OPSLLM_TEST_KEY"), None).complete(MESSAGES) == ["ok"]
    monkeypatch.delenv("OPSLLM_TEST_KEY")
    with pytest.raises(UsageError, match="OPSLLM_TEST_KEY, which is not set"):
        ChatEndpoint(spec(plain.base_url, api_key_env="OPSLLM_TEST_KEY"), None)


def test_the_cache_answers_the_same_request_and_only_that(plain, tmp_path):
    endpoint = ChatEndpoint(spec(plain.base_url), tmp_path / "cache")
    first = endpoint.complete(MESSAGES, n=2, temperature=0.7)
    assert endpoint.complete(MESSAGES, n=2, temperature=0.7) == first
    assert (endpoint.requests_sent, endpoint.cache_hits) == (1, 1)
    endpoint.complete(MESSAGES, n=2, temperature=0.5)
    endpoint.complete(MESSAGES, n=2, temperature=0.7, seed=3)
    endpoint.complete(MESSAGES, n=2, temperature=0.7, max_tokens=9)
    endpoint.complete([{"role": "user", "content": "hello!"}], n=2, temperature=0.7)
    assert (endpoint.requests_sent, endpoint.cache_hits) == (5, 1)
    again = ChatEndpoint(spec(plain.base_url), tmp_path / "cache")  # a new process, the same cache
    again.complete(MESSAGES, n=2, temperature=0.7, seed=3)
    assert (again.requests_sent, again.cache_hits) == (0, 1) and len(plain.requests) == 5


def test_seeded_top_ups_use_new_seeds(plain):
    plain.max_choices = 1
    plain.responder = lambda request: [f"seed {request.get('seed')} #{i}" for i in range(request["n"])]
    texts = ChatEndpoint(spec(plain.base_url), None).complete(MESSAGES, n=3, seed=10)
    assert texts == ["seed 10 #0", "seed 11 #0", "seed 12 #0"]
    assert [(r["n"], r["seed"]) for r in plain.chat_requests()] == [(3, 10), (2, 11), (1, 12)]


def test_concurrent_calls_get_their_own_answers_within_the_concurrency_limit(plain):
    in_flight, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def responder(request):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        release.wait(0.2)
        with lock:
            in_flight -= 1
        return [f"echo {request['messages'][0]['content']}"]

    plain.responder = responder
    endpoint = ChatEndpoint(spec(plain.base_url, concurrency=3), None)
    results: dict[int, list[str]] = {}

    def call(i: int) -> None:
        results[i] = endpoint.complete([{"role": "user", "content": f"q{i}"}])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: [f"echo q{i}"] for i in range(9)}
    assert endpoint.requests_sent == 9 and peak == 3


# ---- the rubric --------------------------------------------------------------------------------------------

ALL = {"evidence_grounding": 1, "topology_consistency": 0, "causal_completeness": 1, "prediction_support": 1,
       "logical_consistency": 0}


@pytest.mark.parametrize("text", [
    json.dumps({**ALL, "rationale": "ok"}),
    f"```json\n{json.dumps({**ALL, 'rationale': 'ok'})}\n```",
    f"Sure, here is the grading.\n{json.dumps({**ALL, 'rationale': 'ok'})}\nHope this helps!",
    f"Thoughts {{not json}} first.\n```\n{json.dumps({**ALL, 'rationale': 'ok'})}\n```\ndone",
    json.dumps({**{k: bool(v) for k, v in ALL.items()}, "rationale": "ok", "extra": 7}),
])
def test_parse_verdict_reads_fenced_or_wrapped_json(text):
    verdict = parse_verdict(text)
    assert verdict == Verdict(**ALL, rationale="ok")
    assert verdict.score == 3 and verdict.rubrics == ALL


@pytest.mark.parametrize("text", [
    json.dumps({k: v for k, v in ALL.items() if k != "causal_completeness"}),  # a rubric missing
    json.dumps({**ALL, "topology_consistency": 2}),
    json.dumps({**ALL, "topology_consistency": "1"}),
    json.dumps({**ALL, "topology_consistency": 1.0}),
    json.dumps({**ALL, "topology_consistency": None}),
    "The chain is good: 5/5.",
    "```json\n{\"evidence_grounding\": 1,\n```",
    "",
])
def test_parse_verdict_is_strict_on_values(text):
    assert parse_verdict(text) is None


def test_judge_and_generator_prompts_hold_the_case_the_answer_and_the_rubrics(smoke_dataset):
    sample = load_samples(smoke_dataset)[0]
    label = sample.label
    messages = generator_messages(sample)
    assert messages[0]["role"] == "system" and len(messages) == 2
    user = messages[1]["content"]
    assert user.startswith(user_prompt(sample))
    assert f"component {label.component} with fault type {label.fault_type}" in user
    assert f"<answer>component: {label.component}; fault_type: {label.fault_type}</answer>" in user
    assert "Do not say or hint that you were told the answer" in user

    judged = judge_messages(user_prompt(sample), "CHAIN-TEXT", label.component, label.fault_type)
    text = judged[1]["content"]
    assert user_prompt(sample) in text and "CHAIN-TEXT" in text
    assert f"component: {label.component}; fault_type: {label.fault_type}" in text
    assert all(f"{name}: {definition}" in text for name, definition in RUBRICS.items())
    assert "ONLY" in text and '"rationale"' in text


def test_the_cli_builds_from_a_config_file_and_sends_the_seed(smoke_dataset, server, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from opsllm.cli import app

    out = tmp_path / "chains.jsonl"
    doc = config(smoke_dataset, server.base_url, out, seed=7).model_dump(mode="json")
    path = tmp_path / "dprm-data.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["dprm", "build-data", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == CASES * 5
    generated = [r for r in server.chat_requests() if r["model"] == GEN]
    assert generated and all(r.get("seed") == 7 for r in generated)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**doc, "chains": 0}))
    result = CliRunner().invoke(app, ["dprm", "build-data", str(bad)])
    assert result.exit_code == 2 and "chains" in result.output
