"""The hierarchical VAE's configuration, `VAEConfig`: its sizes, likelihood and floors, checked
on construction and stored with the checkpoints as a dict. Importable from `jaxvi.vae.model`
too, where the modules it configures live.
"""

from __future__ import annotations

import dataclasses

from jaxvi._validate import check_choice

LIKELIHOODS = ("gaussian", "bernoulli")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild a `HierarchicalVAE` (stored with its checkpoints).

    Attributes:
      data_dim: D, features per data point.
      components: K ≥ 1 (K = 1: one Gaussian prior, a plain VAE with a learned prior).
      latent_dim: L, the dimension of w.
      hidden: widths of the encoder's and decoder's hidden layers.
      head_hidden: widths of the residual network of q(z | w, x).
      likelihood: "gaussian" or "bernoulli".
      min_scale: floor of the Gaussian decoder's per-pixel standard deviation.
      min_latent_scale: floor of s(x).

    Raises:
      ValueError: a size, width or floor that is not positive, or an unknown likelihood.
    """

    data_dim: int
    components: int = 10
    latent_dim: int = 10
    hidden: tuple[int, ...] = (500, 500, 2000)
    head_hidden: tuple[int, ...] = (128,)
    likelihood: str = "gaussian"
    min_scale: float = 0.05
    min_latent_scale: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "head_hidden", tuple(int(h) for h in self.head_hidden))
        for name in ("data_dim", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; got {getattr(self, name)!r}."
                )
        if int(self.components) < 1:
            raise ValueError(
                f"`components` must be a positive integer (K = 1: a single Gaussian prior); "
                f"got {self.components!r}."
            )
        if any(h < 1 for h in (*self.hidden, *self.head_hidden)):
            raise ValueError(
                f"hidden widths must be positive; got {self.hidden}, {self.head_hidden}."
            )
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        if not self.min_scale > 0 or not self.min_latent_scale > 0:
            raise ValueError(
                f"`min_scale` and `min_latent_scale` must be positive; got {self.min_scale!r}, "
                f"{self.min_latent_scale!r}."
            )

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict, stored with the checkpoints.

        Returns:
          A dict of the fields, the widths as lists.
        """
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["head_hidden"] = list(self.head_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """The config of a dict from `to_dict`; unknown keys are ignored.

        Args:
          d: the fields.

        Returns:
          The `VAEConfig`.

        Raises:
          ValueError: as the constructor.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
