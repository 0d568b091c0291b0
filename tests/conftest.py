"""Test session set-up: no network, isolated caches, and a local Hub-compatible server.

`HF_ENDPOINT` must be set before `huggingface_hub` is imported (it reads it at import time), so the
local Hub starts when this file is loaded; every Hub call in the tests goes to 127.0.0.1.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer, HubState  # noqa: E402

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="shark-hf-tests-"))
_HUB = HubServer().start()
os.environ["HF_ENDPOINT"] = _HUB.endpoint
os.environ["HF_HOME"] = str(_SESSION_DIR / "hf_home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("SHARK_HF_CACHE", str(_SESSION_DIR / "shark_hf_cache"))
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)


@pytest.fixture
def local_hub():
    """The local Hub, emptied for this test: `.endpoint`, `.hub.repos`, `.hub.fail_next(...)`, ..."""
    _HUB.hub = HubState()
    yield _HUB
    _HUB.hub = HubState()
