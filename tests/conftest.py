"""Shared fixtures: small random checkpoints written by transformers itself."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_config_kwargs():
    return dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=32, patch_size=8,
    )


@pytest.fixture(autouse=True)
def full_error_details():
    """The repository's config.toml hides exception details from students ("none"); in tests a
    failure should say what went wrong, so AppTests see the full message."""
    from streamlit import config

    before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", "full")
    yield
    config.set_option("client.showErrorDetails", before)
