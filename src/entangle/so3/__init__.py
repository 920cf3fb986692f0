"""SO(3)/O(3) algebra: real spherical harmonics, Wigner 3j / Clebsch–Gordan, Wigner D, irreps.

Conventions (details in each module):

* real harmonics ``Y_{l,m}``, component ``l*l + l + m``, ``m > 0`` cosine-like, ``m < 0``
  sine-like, orthonormal on the sphere (Hodapp & Shapeev Eq. (8)); ``Y_1 ∝ (y, z, x)``;
* ``Y_l(R r) = wigner_D(l, R) @ Y_l(r)`` for any orthogonal ``R``;
* ``real_wigner_3j`` / ``real_clebsch_gordan`` are real tensors invariant (resp. equivariant)
  under those ``D``; odd ``l1 + l2 + l3`` gives the pseudo-tensor (cross-product-like) couplings;
* features of an :class:`Irreps` are concatenated ``(mul, 2l+1)`` blocks, ``m`` fastest.
"""

from entangle.so3.harmonics import num_harmonics, real_spherical_harmonics, solid_harmonics
from entangle.so3.irreps import Irreps, MulIrrep
from entangle.so3.wigner import (
    complex_to_real,
    random_rotation,
    real_clebsch_gordan,
    real_wigner_3j,
    wigner_3j,
    wigner_D,
)

__all__ = [
    "real_spherical_harmonics",
    "solid_harmonics",
    "num_harmonics",
    "wigner_3j",
    "real_wigner_3j",
    "real_clebsch_gordan",
    "complex_to_real",
    "wigner_D",
    "random_rotation",
    "Irreps",
    "MulIrrep",
]
