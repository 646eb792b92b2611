"""Datasets: the sample store, the shared prompt and answer format, exports and RCAEval import/export.

See docs/datasets.md.
"""

from opsllm.data.export import FORMATS, export
from opsllm.data.prompt import SYSTEM_PROMPT, answer_for, build_messages, format_answer, parse_answer
from opsllm.data.rcaeval import export_case, import_case, import_cases
from opsllm.data.store import DatasetStore, split_of

__all__ = [
    "FORMATS",
    "SYSTEM_PROMPT",
    "DatasetStore",
    "answer_for",
    "build_messages",
    "export",
    "export_case",
    "format_answer",
    "import_case",
    "import_cases",
    "parse_answer",
    "split_of",
]
