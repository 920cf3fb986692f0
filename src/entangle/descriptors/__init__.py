"""Atomic descriptors: radial bases, density coefficients, SOAP/ACE invariants, streaming output.

>>> from entangle.descriptors import SOAP, SOAPConfig
>>> soap = SOAP(SOAPConfig(species=("Cu", "Au"), r_cut=5.0, n_max=8, l_max=6, sigma=0.5))
"""

from entangle.descriptors.describe import describe_file
from entangle.descriptors.density import (
    PaddedNeighbours,
    covariant_features,
    delta_density,
    gaussian_density,
    pad_neighbours,
    safe_distances,
)
from entangle.descriptors.radial import (
    CUTOFF_FUNCTIONS,
    ChebyshevBasis,
    GTOBasis,
    SphericalBesselBasis,
    cosine_cutoff,
    cutoff_function,
    mtp_cutoff,
    polynomial_cutoff,
    spherical_bessel_j,
)
from entangle.descriptors.soap import (
    NORMALISATIONS,
    SOAP,
    SOAPConfig,
    SOAPOutput,
    bispectrum,
    dscribe_indices,
    power_spectrum,
    species_numbers,
    structure_average,
)

__all__ = [
    # radial
    "GTOBasis",
    "ChebyshevBasis",
    "SphericalBesselBasis",
    "spherical_bessel_j",
    "cosine_cutoff",
    "polynomial_cutoff",
    "mtp_cutoff",
    "cutoff_function",
    "CUTOFF_FUNCTIONS",
    # density
    "PaddedNeighbours",
    "pad_neighbours",
    "safe_distances",
    "gaussian_density",
    "delta_density",
    "covariant_features",
    # invariants
    "NORMALISATIONS",
    "species_numbers",
    "power_spectrum",
    "bispectrum",
    "structure_average",
    "dscribe_indices",
    "SOAPConfig",
    "SOAPOutput",
    "SOAP",
    # streaming
    "describe_file",
]
