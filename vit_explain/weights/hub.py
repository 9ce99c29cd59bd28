"""The Hugging Face Hub: the cache first, a quick reachability check, then the download with progress."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .common import (
    CONFIG_NAME,
    HUB_PROBE_TIMEOUT,
    PICKLE_NAME,
    PREPROCESSOR_NAME,
    SAFETENSORS_NAME,
    CheckpointError,
    HubUnreachableError,
    ProgressFn,
)
from .files import _read_json

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}")
_TRUE = {"1", "true", "yes", "on"}


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_offline() -> bool:
    """Offline mode as huggingface_hub sees it (read at its import) or as the environment says now."""
    from huggingface_hub import constants

    from_env = any((os.environ.get(n) or "").strip().lower() in _TRUE for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return from_env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _uses_proxy() -> bool:
    return any(os.environ.get(n) for n in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def _hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Can a TCP connection to the Hub be opened within ``timeout`` seconds? (DNS included)"""
    if _uses_proxy():  # only the proxy knows; let huggingface_hub try
        return True
    url = urlparse(endpoint)
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, daemon=True)  # name lookups ignore socket timeouts
    worker.start()
    worker.join(timeout + 1.0)
    return bool(outcome and outcome[0])


def _unreachable(repo_id: str, reason: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"Cannot reach the Hugging Face Hub to download {repo_id!r}: {reason}. "
        "The bundled model works offline and needs no download. To use this checkpoint without "
        f"the Hub, fetch config.json, model.safetensors and preprocessor_config.json from "
        f"https://huggingface.co/{repo_id} on a machine with internet, put them in one folder "
        "and load that folder instead (load_checkpoint('/path/to/folder'))."
    )


def _mb(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def _model_info(repo_id: str, revision: str | None, endpoint: str):
    """The repository's file list with sizes; its errors become messages a person understands."""
    import huggingface_hub
    from huggingface_hub.utils import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return huggingface_hub.HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id!r} is a gated repository: accept its terms on huggingface.co and log in "
            "(huggingface-cli login) before downloading it."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"There is no public model called {repo_id!r} on the Hugging Face Hub (check the spelling).") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"{repo_id!r} has no revision {revision!r}.") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise _unreachable(repo_id, f"the Hub did not answer ({exc.__class__.__name__})") from exc


def _hub_download(repo_id: str, *, revision, cache_dir, report: ProgressFn,
                  check: Callable[[dict[str, Any], str], Any] | None = None) -> Path:
    """The snapshot folder holding the checkpoint's files, from the cache or downloaded.

    ``check(config, repo_id)`` sees the repository's ``config.json`` before any weight file is
    requested and raises CheckpointError for a model that cannot run here: a refusal costs one
    small download, not the weights'.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    common = dict(repo_id=repo_id, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir))

    # 1. Already in the cache? Then no network is needed at all.
    report(0.0, f"Looking for {repo_id} in the Hugging Face cache")
    cached: dict[str, Path] = {}
    for name in (CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME, PREPROCESSOR_NAME):
        try:
            cached[name] = Path(hf_hub_download(filename=name, local_files_only=True, **common))
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ValueError):
            pass
    if CONFIG_NAME in cached and (SAFETENSORS_NAME in cached or PICKLE_NAME in cached):
        if check is not None:
            check(_read_config(cached[CONFIG_NAME]), repo_id)
        report(0.95, f"Found {repo_id} in the cache")
        return cached[CONFIG_NAME].parent

    # 2. Fail fast when offline, instead of minutes of retries.
    if _hub_offline():
        raise _unreachable(repo_id, "offline mode is on (HF_HUB_OFFLINE is set) and it is not in the local cache")
    endpoint = _hub_endpoint()
    report(0.0, f"Connecting to {urlparse(endpoint).hostname}")
    if not _hub_reachable(endpoint):
        raise _unreachable(repo_id, f"no connection to {urlparse(endpoint).hostname} (this machine seems to be offline)")

    # 3. Which files, and how big.
    info = _model_info(repo_id, revision, endpoint)
    sizes = {s.rfilename: getattr(s, "size", None) for s in (info.siblings or [])}
    if CONFIG_NAME not in sizes:
        raise CheckpointError(f"{repo_id!r} has no config.json; it is not a transformers model repository.")
    if SAFETENSORS_NAME in sizes:
        weights = SAFETENSORS_NAME
    elif PICKLE_NAME in sizes:
        weights = PICKLE_NAME
    else:
        raise CheckpointError(
            f"{repo_id!r} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME} (sharded and other "
            "formats are not supported)."
        )
    wanted = [CONFIG_NAME] + ([PREPROCESSOR_NAME] if PREPROCESSOR_NAME in sizes else []) + [weights]
    total = sum(sizes.get(n) or 0 for n in wanted) or 1
    done = 0

    # Download (config.json first), reporting bytes as they arrive when huggingface_hub lets us see them.
    import inspect

    can_hook = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    folder: Path | None = None
    for name in wanted:
        size = sizes.get(name)
        start = done
        report(0.95 * start / total, f"Downloading {name} ({_mb(size)})")
        kwargs: dict[str, Any] = dict(filename=name, endpoint=endpoint, **common)
        if can_hook:
            kwargs["tqdm_class"] = _progress_bar_class(
                lambda n, name=name, start=start, size=size: report(
                    0.95 * min(total, start + n) / total, f"Downloading {name}: {_mb(n)} of {_mb(size)}"
                )
            )
        try:
            folder = Path(hf_hub_download(**kwargs)).parent
        except EntryNotFoundError as exc:
            raise CheckpointError(f"{repo_id!r} lists {name} but it could not be fetched.") from exc
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise _unreachable(repo_id, f"the download of {name} failed ({exc.__class__.__name__})") from exc
        done += size or 0
        report(0.95 * done / total, f"Downloaded {name} ({_mb(size)})")
        if name == CONFIG_NAME and check is not None:  # refuse before the weights are requested
            check(_read_config(folder / CONFIG_NAME), repo_id)
    assert folder is not None
    return folder


#: One lock per repository (and revision and cache folder): sessions asking for the same checkpoint at once
#: download it once; the others wait, then find it in the cache. Other repositories are not held up.
_REPO_LOCKS: dict[tuple, threading.Lock] = {}
_REPO_LOCKS_GUARD = threading.Lock()


def fetch_repo(repo_id: str, *, revision: str | None = None, cache_dir=None, progress: ProgressFn | None = None,
               check: Callable[[dict[str, Any], str], Any] | None = None) -> Path:
    """The local folder of ``repo_id``'s checkpoint files, downloaded once into huggingface_hub's cache.

    ``progress(fraction, message)`` follows the download; ``check(config, repo_id)`` may refuse the model
    from its ``config.json`` before any weight file is requested. Safe to call from many threads: one
    download per repository, however many sessions ask for it at once.
    """
    if not _REPO_ID.fullmatch(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a Hugging Face Hub model id (like 'google/vit-base-patch16-224').")
    key = (repo_id, revision, None if cache_dir is None else str(cache_dir))
    with _REPO_LOCKS_GUARD:
        lock = _REPO_LOCKS.setdefault(key, threading.Lock())
    report = progress or (lambda fraction, message: None)
    if not lock.acquire(blocking=False):
        report(0.0, f"Another session is downloading {repo_id}; waiting for it")
        lock.acquire()
    try:
        return _hub_download(repo_id, revision=revision, cache_dir=cache_dir, report=report, check=check)
    finally:
        lock.release()


def _progress_bar_class(on_bytes: Callable[[int], None]) -> type:
    """A tqdm subclass for huggingface_hub that forwards the byte count to ``on_bytes``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Progress(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no terminal bar; the callback reports instead
            super().__init__(*args, **kwargs)
            self._seen = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            self._seen += int(n or 0)
            on_bytes(self._seen)
            return super().update(n)

    return _Progress




def _read_config(path: Path) -> dict[str, Any]:
    return _read_json(path, "The repository's config.json")
