"""Shared fixtures: offline, one thread, a tiny random model built in code."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Commands run their units in-process unless a test asks for Ray (--workers N).
os.environ.setdefault("SUBLIMINAL_WORKERS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny():
    from subliminal.models import load_model

    return load_model("tiny")


# Module fixtures that run a whole tiny chain or train adapters (seconds each): every test that
# uses one belongs to the slow lane, so the fast lane (-m "not slow") never builds them.
COSTLY_FIXTURES = {"finished", "tiny_scanner", "teacher_data"}


def pytest_collection_modifyitems(items):
    for item in items:
        if COSTLY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
