"""Building the model a fit trains, and its data in model layout."""

from dataclasses import dataclass

import torch

from ._batchnorm import batchnorm_layers, setup_batchnorm
from ._data import model_data
from .backbones._module import build_module, first_conv
from .backbones._registry import build_backbone

__all__ = ["BuiltModel", "build_model"]


@dataclass(frozen=True, repr=False)
class BuiltModel:
    """The module of a fit and what training reads with it.

    Parameters
    ----------
    module : FastRetrainModule
        Preprocessing, backbone and the new head.
    data : ndarray or Dataset
        The training data in model layout.
    targets : ndarray or None
        The encoded labels (the standardized targets of a regression), None
        when ``data`` carries them.
    labels : ndarray
        The encoded labels or standardized targets (the validation split
        needs them: it stratifies by class).
    input_shape : tuple of int
        The shape of one sample in model layout.
    held_batchnorm : list of nn.Module
        The BatchNorm layers held in eval mode during SGD.
    """

    module: torch.nn.Module
    data: object
    targets: object
    labels: object
    input_shape: tuple
    held_batchnorm: list

    @property
    def recalibrates_batchnorm(self):
        """Whether some BatchNorm layer trains its statistics, which the head
        solve's pass then re-estimates."""
        return len(self.held_batchnorm) < len(batchnorm_layers(self.module))

    def held_batchnorm_names(self):
        """The names in ``module`` of the BatchNorm layers held in eval mode."""
        held = self.held_batchnorm
        return [n for n, m in self.module.named_modules() if any(m is h for h in held)]


def build_model(config, fit_input):
    """The backbone of ``config`` built, with a new head, on ``fit_input``.

    Draws from torch's global generator (random heads and initializations):
    the caller seeds it.
    """
    backbone = build_backbone(config.backbone, config.weights)
    conv = first_conv(backbone)
    data, targets, sample = model_data(fit_input, conv=conv, size=config.input_size)
    module = build_module(
        backbone,
        config.backbone_spec,
        sample,
        config.n_outputs,
        input_size=config.input_size,
        hidden=config.head.hidden_widths(),
        reinit_layers=config.head.reinit_layers,
        stages=config.head.stages,
    )
    if config.precision == "bfloat16":
        if config.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bfloat16' needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(config.device)} has none. Use "
                "'float32'."
            )
        module.precision = "bfloat16"
        module.backbone.to(memory_format=torch.channels_last)
    held = setup_batchnorm(module.backbone, config.sgd.bn_mode, config.sgd.bn_momentum)
    return BuiltModel(
        module=module,
        data=data,
        targets=targets,
        labels=fit_input.y,
        input_shape=tuple(sample.shape[1:]),
        held_batchnorm=held,
    )
