"""Configuration of neural-ODE image classifiers (Gusak et al., "Towards Understanding Normalization in
Neural ODEs", 2020; meta-solver training, Gusak et al., 2021).

Self-contained: copied next to the weights by ``register_for_auto_class`` (with the sibling modules that the
modelling file imports relatively), so the model loads with ``trust_remote_code=True`` without hf_reduce.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

NORMS = ("batch", "layer", "group", "instance", "none")
PARAM_NORMS = ("none", "weight", "spectral")
GRADIENT_MODES = ("backprop", "adjoint", "irdm")
ENSEMBLE_KEYS = ("method", "u", "v", "n_steps", "weight")

PRESETS: dict[str, dict] = {
    # ODENet10 of the normalisation paper (CIFAR-10): stem, then three stages of (down-sampling ResNet block,)
    # ODE block with 64 / 128 / 256 channels, Euler with 8 steps.
    "odenet10_cifar": dict(
        channels=[64, 128, 256],
        ode_stages=[True, True, True],
        num_channels=3,
        image_size=32,
        method="euler",
        n_steps=8,
    ),
    # A small MNIST-sized ODENet: a ResNet stage, then an ODE stage at half resolution.
    "odenet_mnist": dict(
        channels=[32, 64],
        ode_stages=[False, True],
        num_channels=1,
        image_size=28,
        method="rk4_u2",
        u=1 / 3,
        n_steps=4,
    ),
    # The same layouts with ResNet blocks everywhere: the baselines "of the same size".
    "resnet10_cifar": dict(
        channels=[64, 128, 256], ode_stages=[False, False, False], num_channels=3, image_size=32
    ),
    "resnet_mnist": dict(channels=[32, 64], ode_stages=[False, False], num_channels=1, image_size=28),
}


class ODEConfig(PreTrainedConfig):
    r"""Configuration of :class:`ODEForImageClassification`.

    The network is a 3x3 conv stem, then one stage per entry of ``channels``: stage ``i > 0`` starts with a
    stride-2 ResNet block from ``channels[i-1]`` to ``channels[i]``; each stage then has an ODE block
    (``ode_stages[i]``) or a ResNet block of ``channels[i]`` channels. Global average pooling and a linear head.

    Args:
        channels, ode_stages: the stages (see above); equal lengths.
        time_concat: the ODE function's convolutions see ``t`` as an extra input channel.
        norm_stem, norm_resnet, norm_ode: normalisation after the stem, inside ResNet blocks, inside the ODE
            function: one of ``batch``, ``layer`` (GroupNorm with one group, as in the paper), ``group``,
            ``instance``, ``none``.
        group_norm_groups: groups of ``group`` normalisation (capped by the channel count).
        ode_param_norm: ``weight`` or ``spectral`` normalisation of the ODE function's conv weights, or ``none``.
        method, u, v: the solver (any torchdiffeq method, including hf_reduce's ``rk2_u`` ... ``rk4_u3``);
            ``u`` / ``v`` default to the family's best-known member (``rk4_u2``: classic RK4).
        n_steps: equal steps over [0, 1] for fixed-grid methods; ``rtol`` / ``atol`` for adaptive ones.
        gradient_mode: ``backprop`` through the solver, ``adjoint``, or ``irdm`` (with ``irdm_nodes``).
        solver_ensemble: optional list of solvers whose outputs every ODE block averages, each a dict with
            ``u`` / ``v`` / ``n_steps`` / ``method`` (defaults: the fields above) and ``weight`` (default 1).
        image_mean, image_std: normalisation applied inside the model; inputs are pixels in [0, 1].
    """

    model_type = "hf_reduce_ode"

    def __init__(
        self,
        channels: list[int] | None = None,
        ode_stages: list[bool] | None = None,
        num_channels: int = 1,
        image_size: int = 28,
        time_concat: bool = True,
        norm_stem: str = "batch",
        norm_resnet: str = "batch",
        norm_ode: str = "layer",
        group_norm_groups: int = 32,
        ode_param_norm: str = "none",
        method: str = "rk4_u2",
        u: float | None = None,
        v: float | None = None,
        n_steps: int = 4,
        rtol: float = 1e-3,
        atol: float = 1e-4,
        gradient_mode: str = "backprop",
        irdm_nodes: int = 33,  # odeint_irdm's DEFAULT_NODES (this file stands alone in remote code)
        solver_ensemble: list[dict] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        pixel_normalization: dict[str, list[float]] | None = None,
        **kwargs,
    ) -> None:
        self.channels = list(channels) if channels is not None else [32, 64]
        self.ode_stages = list(ode_stages) if ode_stages is not None else [False, True]
        self.num_channels = num_channels
        self.image_size = image_size
        self.time_concat = time_concat
        self.norm_stem, self.norm_resnet, self.norm_ode = norm_stem, norm_resnet, norm_ode
        self.group_norm_groups = group_norm_groups
        self.ode_param_norm = ode_param_norm
        self.method, self.u, self.v, self.n_steps = method, u, v, n_steps
        self.rtol, self.atol = rtol, atol
        self.gradient_mode = gradient_mode
        self.irdm_nodes = irdm_nodes
        self.solver_ensemble = [dict(member) for member in solver_ensemble] if solver_ensemble else None
        # Stored as one dict, not as image_mean / image_std keys: transformers' model tests set every config key
        # containing "_std" (an initialiser's scale) to 1e-10, which would divide the pixels by it. The image
        # processor carries the same statistics under transformers' names. (Written out per family: each
        # configuration file travels alone as remote code.)
        saved = pixel_normalization or {}
        self.pixel_normalization = {
            "mean": list(image_mean if image_mean is not None else saved.get("mean", [0.5] * num_channels)),
            "std": list(image_std if image_std is not None else saved.get("std", [0.5] * num_channels)),
        }
        super().__init__(**kwargs)
        self._check()

    @property
    def image_mean(self) -> list[float]:
        """Per-channel mean the model subtracts from pixels in [0, 1]."""
        return self.pixel_normalization["mean"]

    @property
    def image_std(self) -> list[float]:
        """Per-channel standard deviation the model divides by."""
        return self.pixel_normalization["std"]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ODEConfig:
        """A config from one of :data:`PRESETS` (``odenet10_cifar``, ``odenet_mnist``, ``resnet*``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def _check(self) -> None:
        if len(self.channels) != len(self.ode_stages) or not self.channels:
            raise ValueError(
                f"channels and ode_stages need the same non-zero length, got {self.channels} and {self.ode_stages}"
            )
        for name in ("norm_stem", "norm_resnet", "norm_ode"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"{name} must be one of {list(NORMS)}, got {getattr(self, name)!r}")
        if self.ode_param_norm not in PARAM_NORMS:
            raise ValueError(
                f"ode_param_norm must be one of {list(PARAM_NORMS)}, got {self.ode_param_norm!r}"
            )
        if self.gradient_mode not in GRADIENT_MODES:
            raise ValueError(
                f"gradient_mode must be one of {list(GRADIENT_MODES)}, got {self.gradient_mode!r}"
            )
        if self.n_steps < 1 or self.irdm_nodes < 3:
            raise ValueError(
                f"n_steps must be >= 1 and irdm_nodes >= 3, got {self.n_steps}, {self.irdm_nodes}"
            )
        for member in self.solver_ensemble or []:
            unknown = set(member) - set(ENSEMBLE_KEYS)
            if unknown:
                raise ValueError(
                    f"solver_ensemble members take keys {list(ENSEMBLE_KEYS)}, got unknown {sorted(unknown)}"
                )
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"image_mean / image_std need {self.num_channels} values")
        if self.image_size < 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"image_size {self.image_size} is too small for {len(self.channels) - 1} down-samplings"
            )
