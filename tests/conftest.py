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
