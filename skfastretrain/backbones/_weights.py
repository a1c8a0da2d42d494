"""Loading weight files into backbones, without unpickling code."""

import os

import torch

__all__ = ["is_weights_path", "load_state_dict_file"]


def is_weights_path(weights):
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pt", ".pth"))
    )


def load_state_dict_file(module, path):
    """Load a state_dict file into ``module`` without unpickling code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        # "default" is the usual slip for the pretrained weights' "DEFAULT".
        hint = (
            " For pretrained weights, pass 'DEFAULT'."
            if path.lower() == "default"
            else ""
        )
        raise FileNotFoundError(f"Weight file not found: {path!r}.{hint}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"Weights in {path!r} do not fit the backbone: {exc}") from exc
    return module
