"""What a Hub repository holds, found before anything large moves: architecture, parameters, download size.

:func:`inspect_repo` asks the Hub for the file list (with sizes) and fetches ``config.json`` only:
a model this app cannot run is refused by name there, before any weight file is requested, and a
large download can be announced (and confirmed) before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .common import CONFIG_NAME, PICKLE_NAME, PREPROCESSOR_NAME, SAFETENSORS_NAME, CheckpointError
from .hub import _REPO_ID, _hub_endpoint, _hub_offline, _hub_reachable, _model_info, _read_config, _unreachable


@dataclass(frozen=True)
class RepoSummary:
    """A Hub checkpoint as found before its weights are downloaded."""

    repo_id: str
    revision: str | None
    architecture: str  #: e.g. "ViTForImageClassification" or timm's "vit_small_patch16_224.augreg_in21k"
    num_parameters: int | None  #: None when neither the Hub nor the config says
    download_bytes: int  #: config, preprocessor and weight file together
    weight_file: str | None
    refusal: str | None = None  #: why this app cannot run it (None: it can)

    @property
    def download_mb(self) -> float:
        return self.download_bytes / 1e6

    def describe(self) -> str:
        params = f"{self.num_parameters / 1e6:.1f}M parameters" if self.num_parameters else "parameter count unknown"
        return f"{self.repo_id}: {self.architecture}, {params}, {self.download_mb:.0f} MB to download"


def parse_repo_text(text: str) -> tuple[str, str | None]:
    """``"org/name"`` or ``"org/name@revision"`` (spaces trimmed) -> (repo id, revision); ValueError if malformed."""
    text = (text or "").strip()
    repo_id, _, revision = text.partition("@")
    repo_id, revision = repo_id.strip(), revision.strip() or None
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"{text[:100]!r} is not a Hub model id: write it as organisation/name, "
                         "e.g. google/vit-base-patch16-224 (optionally @revision).")
    if revision is not None and (len(revision) > 100 or not all(c.isalnum() or c in "._-/" for c in revision)):
        raise ValueError(f"{revision[:100]!r} is not a revision name (a branch, tag or commit hash).")
    return repo_id, revision


def inspect_repo(repo_id: str, revision: str | None = None, *, cache_dir=None) -> RepoSummary:
    """The repository's architecture, size and whether it runs here; downloads ``config.json`` only.

    Raises CheckpointError (missing, gated, not a model repository) or HubUnreachableError (offline).
    A model this app cannot run is not an error here: its :attr:`RepoSummary.refusal` says why.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    from .hf_format import check_config

    if _hub_offline():
        raise _unreachable(repo_id, "offline mode is on (HF_HUB_OFFLINE is set)")
    endpoint = _hub_endpoint()
    if not _hub_reachable(endpoint):
        raise _unreachable(repo_id, f"no connection to {urlparse(endpoint).hostname} (this machine seems to be offline)")
    info = _model_info(repo_id, revision, endpoint)
    sizes = {s.rfilename: getattr(s, "size", None) for s in (info.siblings or [])}
    if CONFIG_NAME not in sizes:
        raise CheckpointError(f"{repo_id!r} has no config.json; it is not a transformers or timm model repository.")
    weight_file = SAFETENSORS_NAME if SAFETENSORS_NAME in sizes else PICKLE_NAME if PICKLE_NAME in sizes else None
    try:
        path = Path(hf_hub_download(repo_id=repo_id, filename=CONFIG_NAME, revision=revision, endpoint=endpoint,
                                    cache_dir=None if cache_dir is None else str(cache_dir)))
    except (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise _unreachable(repo_id, f"config.json could not be fetched ({exc.__class__.__name__})") from exc
    raw = _read_config(path)
    architecture = _architecture(raw)
    refusal = None
    try:
        check_config(raw, repo_id)
    except CheckpointError as exc:
        refusal = str(exc)
    if refusal is None and weight_file is None:
        refusal = (f"{repo_id!r} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME} (sharded and other formats "
                   "are not supported).")
    wanted = [CONFIG_NAME, PREPROCESSOR_NAME] + ([weight_file] if weight_file else [])
    download = sum(sizes.get(n) or 0 for n in wanted if n in sizes)
    return RepoSummary(repo_id, revision, architecture, _parameters(info, raw, sizes.get(weight_file or "")),
                       download, weight_file, refusal)


def _architecture(raw: dict[str, Any]) -> str:
    if raw.get("architectures"):
        return ", ".join(str(a) for a in raw["architectures"])
    if raw.get("architecture"):  # timm
        return str(raw["architecture"])
    return str(raw.get("model_type") or "unknown architecture")


def _parameters(info, raw: dict[str, Any], weight_bytes: int | None) -> int | None:
    """From the Hub's safetensors summary when it has one, else from the config, else from the file size."""
    total = getattr(getattr(info, "safetensors", None), "total", None)
    if total:
        return int(total)
    try:
        from ..config import ViTConfig
        from ..flops import architecture

        if raw.get("model_type") in ("vit", "deit", "dinov2", "dinov2_with_registers"):
            config = ViTConfig.from_dict(raw)
            classifier = any("ForImageClassification" in a for a in raw.get("architectures") or [])
            pooler = (raw.get("architectures") or [""])[0] in ("ViTModel", "DeiTModel")
            return architecture(config, has_pooler=pooler, classifier=classifier,
                                num_labels=config.num_labels if classifier else 0)[0].params
    except (ValueError, TypeError, KeyError):
        pass
    return int(weight_bytes // 4) if weight_bytes else None  # float32 weights: four bytes each
