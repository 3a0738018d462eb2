"""Load ImageNet weights into a timm backbone: timm's hub download or a local weights file."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from tumorcls.errors import WeightsError

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("classifier.", "fc.", "head.", "head.fc.", "last_linear.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch state dict (loaded with ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: '{path}'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a weights file"
        raise WeightsError(f"cannot read weights file '{path}': {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"'{path}' does not hold a state dict of tensors")
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into ``backbone`` without its classifier; log and return missing keys."""
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = backbone.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise WeightsError(
            f"weights file '{path}' does not fit this backbone: {len(mismatched)} tensor(s) of another shape "
            f"(e.g. {mismatched[0]}: {tuple(state[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)})"
        )
    matched = [k for k in state if k in own]
    if not matched:
        raise WeightsError(f"weights file '{path}' shares no tensor name with this backbone")
    result = backbone.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    log.info("loaded %d/%d backbone tensors from %s", len(matched), len(own), path)
    if missing:
        log.warning("weights file lacks %d backbone tensor(s), left freshly initialised: %s", len(missing), missing)
    if unexpected:
        log.warning(
            "ignored %d tensor(s) of the weights file unknown to the backbone: %s", len(unexpected), unexpected[:10]
        )
    return {"missing": missing, "unexpected": unexpected, "loaded": matched}


def hub_failure_message(name: str, exc: BaseException) -> str:
    return (
        f"could not download pretrained weights for '{name}' from the model hub ({type(exc).__name__}); "
        "either go online, or use a local file with model.weights=/path/to/weights.safetensors "
        "(or env TUMORCLS_WEIGHTS), or train from scratch with model.pretrained=false"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's host (HF_ENDPOINT, default huggingface.co) accepts a connection in time."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def cache_only_when_hub_unreachable(timeout: float = 3.0) -> None:
    """huggingface_hub retries an unreachable hub for about 45 s before it looks in its cache. When a quick
    probe finds no hub, switch it to offline mode for this process (as HF_HUB_OFFLINE=1 does): cached weights
    load at once, missing ones fail at once with a one-line WeightsError."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or hub_reachable(timeout):
        return
    log.warning(
        "the model hub %s cannot be reached: pretrained weights come from the local cache only", constants.ENDPOINT
    )
    constants.HF_HUB_OFFLINE = True
