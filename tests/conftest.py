"""Shared fixtures and settings of every test (shared helpers: ``helpers.py``, ``app_helpers.py``)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_config_kwargs():
    """The tiny ViT of ``helpers.TINY`` (4 x 4 patches, width 32, 4 heads, 2 layers) as ViTConfig keywords."""
    from helpers import TINY

    return dict(TINY)


@pytest.fixture(autouse=True)
def full_error_details():
    """The repository's config.toml hides exception details from students ("none"); in tests a
    failure should say what went wrong, so AppTests see the full message."""
    from streamlit import config

    before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", "full")
    yield
    config.set_option("client.showErrorDetails", before)
