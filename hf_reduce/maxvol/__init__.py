"""MaxVol reduced-order modelling (Gusak et al., 2021). So far: the maximum-volume algorithms."""

from .algorithm import maxvol, rect_maxvol

__all__ = ["maxvol", "rect_maxvol"]
