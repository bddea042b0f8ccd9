"""Test-wide environment: every test runs offline, small and isolated.

Prefect and MLflow keep state in files; each test session points them at a
temporary directory so cache hits never leak between sessions, and turns off
telemetry (no DNS lookups on a closed network).
"""

import os
import tempfile

_SESSION_TMP = tempfile.mkdtemp(prefix="lmcore-tests-")

os.environ.setdefault("PREFECT_HOME", os.path.join(_SESSION_TMP, "prefect"))
os.environ["LMCORE_CACHE_DIR"] = os.path.join(_SESSION_TMP, "lmcore-cache")  # the bf16 probe's answer
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def seed():
    torch.manual_seed(0)
    return 0
