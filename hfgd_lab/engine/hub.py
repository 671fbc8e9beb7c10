"""Hugging Face Hub access for model folders, through ``huggingface_hub``.

A repo id (``owner/name``) resolves to a local snapshot folder (``model.safetensors``,
``config.json``, ``README.md``) in the Hub's own cache. Offline (``HF_HUB_OFFLINE=1``)
only the local cache is used, and a repo that is not there fails saying so.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ..models.weights import hub_offline
from .checkpoint import CheckpointError

__all__ = ["snapshot_folder"]


def snapshot_folder(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of Hub repo ``repo_id`` (downloaded into the Hub cache when
    online; the cache only when offline).

    Raises:
        CheckpointError: the repo is not in the cache (offline) or cannot be fetched.
    """
    offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"Hub repo {repo_id!r} is not in the local Hugging Face cache"
            + (" and HF_HUB_OFFLINE is set" if offline else " and cannot be fetched")
            + "; download it once online, or give a local folder") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"Hub repo {repo_id!r}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}") from None
