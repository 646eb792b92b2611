from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the repository (reference manifests, CRDs, data)."""
    if not _SHARED.is_dir():
        pytest.skip(f"the shared folder {_SHARED} is absent; it holds the reference files this test checks "
                    "against and sits beside the repository checkout")
    return _SHARED


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> Path:
    """The dataset of the smoke campaign (25 labelled samples, one per fault type), run once per worker."""
    from opsllm.lab.campaign import run_campaign
    from opsllm.spec.campaign import load_campaign

    out = tmp_path_factory.mktemp("smoke-campaign")
    run_campaign(load_campaign(Path(__file__).resolve().parent.parent / "examples/campaigns/smoke.yaml"), out)
    return out / "dataset"
