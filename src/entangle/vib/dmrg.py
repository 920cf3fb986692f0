"""Two-site DMRG for the lowest eigenstates of a Hermitian (real symmetric) MPO.

The wavefunction is an MPS in mixed-canonical form. At each bond ``(i, i+1)`` the two cores are
merged into ``θ (D_{i-1}, d_i, d_{i+1}, D_{i+1})`` and the effective Hamiltonian
``H_eff = L_i ⊗ W_i ⊗ W_{i+1} ⊗ R_{i+2}`` (White, PRL 69, 2863 (1992); Schollwöck,
Ann. Phys. 326, 96 (2011), sec. 6) is minimised matrix-free by a Davidson iteration with the
diagonal of ``H_eff`` as preconditioner (dense ``eigh`` for small local problems). ``θ`` is
split again by a truncated SVD (``max_bond``, relative ``cutoff``) and the left/right
environments are updated as the sweep moves; all environments are cached.

Excited states are computed one after another by **orthogonal projection**: for state ``k`` the
local problem is solved in the orthogonal complement of the projections ``p_j`` of every
converged state ``ψ_j`` (``j < k``) onto the current two-site space,
``p_j = <L-overlap_j| ψ_j |R-overlap_j>``. Because ``<ψ_j|ψ_k> = <p_j|θ>`` exactly, the new
state is orthogonal to all earlier ones before truncation, and the local minimum is the lowest
state of ``H`` in that complement — no penalty weight to choose, no shift of the spectrum. The
energies returned are the Rayleigh quotients of the final MPS, and ``overlaps`` shows how far
truncation has broken the orthogonality.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from entangle.errors import ConfigError, DataError, ShapeError
from entangle.tn import MPO, MPS, merge, split

__all__ = ["DMRGResult", "dmrg", "expectation", "check_hermitian"]


@dataclass
class DMRGResult:
    """Result of :func:`dmrg`.

    Attributes
    ----------
    energies : (n_states,) Rayleigh quotients ``<ψ|H|ψ> / <ψ|ψ>`` of the final states, ascending,
        in the Hamiltonian's units.
    states : n_states normalised MPS, in the order of ``energies``.
    history : one dict per state and sweep: ``state`` (index in the order computed), ``sweep``,
        ``energy`` (lowest local eigenvalue at the end of the sweep), ``truncation_error`` (largest
        discarded weight ``Σ s²`` of the normalised state over the sweep's bonds), ``max_bond``,
        ``max_residual`` (largest local eigen-residual norm), ``seconds``.
    converged : per state (same order as ``energies``), whether the sweep energy changed by
        less than ``tol`` within ``n_sweeps`` sweeps.
    overlaps : (n_states, n_states) ``<ψ_a|ψ_b>``; the identity up to truncation.
    """

    energies: torch.Tensor
    states: list[MPS]
    history: list[dict] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)
    overlaps: torch.Tensor | None = None


# --------------------------------------------------------------------------- contractions
def _left_env(env: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Grow the left environment by one site: env (bra, mpo, ket), a (D, d, D'), w (Dw, d, d, Dw')."""
    t = torch.tensordot(env, a, dims=([2], [0]))  # (bra, w, t, ket')
    t = torch.tensordot(t, w, dims=([1, 2], [0, 2]))  # (bra, ket', s, w')
    t = torch.tensordot(a.conj(), t, dims=([0, 1], [0, 2]))  # (bra', ket', w')
    return t.permute(0, 2, 1).contiguous()  # (bra', w', ket')


def _right_env(env: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Grow the right environment by one site: env (bra', mpo', ket')."""
    t = torch.tensordot(a, env, dims=([2], [2]))  # (ket, t, bra', w')
    t = torch.tensordot(w, t, dims=([2, 3], [1, 3]))  # (w, s, ket, bra')
    return torch.tensordot(a.conj(), t, dims=([1, 2], [1, 3])).contiguous()  # (bra, w, ket)


class _SiteOperator:
    """An MPO core ``W (Dw, d, d, Dw')`` split as ``W = δ_{pq} G[w, q, v] + O`` for a fast ``H_eff θ``.

    Vibrational MPOs are mostly diagonal in the physical legs (the potential is diagonal in a
    DVR; only the few kinetic blocks are not). Applying the diagonal part costs
    ``d Dw Dw'`` per remaining entry instead of ``d² Dw Dw'``, and the off-diagonal part is
    applied only for the ``(w, v)`` bond pairs where it is non-zero. Cores without that
    structure are applied densely.
    """

    def __init__(self, core: torch.Tensor):
        self.core = core
        dw, d_out, d_in, dw2 = core.shape
        self.diag = torch.diagonal(core, dim1=1, dim2=2).permute(2, 0, 1).contiguous()  # (d, Dw, Dw')
        off = core - torch.diag_embed(torch.diagonal(core, dim1=1, dim2=2)).permute(0, 2, 3, 1)  # (Dw, d, d, Dw')
        pairs = torch.nonzero(off.abs().amax(dim=(1, 2)) > 0)  # (k, 2) bond pairs with off-diagonal blocks
        self.structured = pairs.shape[0] <= (dw * dw2) // 2
        self.w_idx, self.v_idx = pairs[:, 0], pairs[:, 1]
        self.off = off[self.w_idx, :, :, self.v_idx].contiguous()  # (k, p, q)

    def apply(self, x: torch.Tensor, w_axis: int, s_axis: int) -> torch.Tensor:
        """Contract the bond leg ``w_axis`` and physical leg ``s_axis`` of ``x`` with this core's
        ``(w, q)`` legs; the other legs of ``x`` keep their order and ``(p, v)`` are appended."""
        dw, d, _, dw2 = self.core.shape
        if not self.structured:
            return torch.tensordot(x, self.core, dims=([w_axis, s_axis], [0, 2]))
        xm = x.movedim((w_axis, s_axis), (0, 1))  # (w, q, *rest)
        rest = xm.shape[2:]
        xm = xm.reshape(dw, d, -1)  # (w, q, R)
        y = torch.bmm(xm.permute(1, 2, 0), self.diag)  # (p, R, v): the diagonal part, p = q
        if self.w_idx.numel():
            z = torch.bmm(self.off, xm[self.w_idx])  # (k, p, R)
            y.index_add_(2, self.v_idx, z.permute(1, 2, 0))  # add block k into bond v_k
        return y.permute(1, 0, 2).reshape(*rest, d, dw2)  # (*rest, p, v), a view


def _apply_two_site(left: torch.Tensor, op1: _SiteOperator, op2: _SiteOperator, right: torch.Tensor,
                    theta: torch.Tensor) -> torch.Tensor:
    """``H_eff θ`` for θ (a, s, t, b) -> (a', s', t', b')."""
    x = torch.tensordot(left, theta, dims=([2], [0]))  # (a', w, s, t, b)
    x = op1.apply(x, 1, 2)  # (a', t, b, s', v)
    x = op2.apply(x, 4, 1)  # (a', b, s', t', u)
    return torch.tensordot(x, right, dims=([1, 4], [2, 1]))  # (a', s', t', b')


def _diag_two_site(left, w1, w2, right) -> torch.Tensor:
    """Diagonal of ``H_eff``, shape (a, s, t, b)."""
    ld = torch.diagonal(left, dim1=0, dim2=2)  # (w, a)
    w1d = torch.diagonal(w1, dim1=1, dim2=2)  # (w, v, s)
    w2d = torch.diagonal(w2, dim1=1, dim2=2)  # (v, u, t)
    rd = torch.diagonal(right, dim1=0, dim2=2)  # (u, b)
    return torch.einsum("wa,wvs,vut,ub->astb", ld, w1d, w2d, rd)


def _dense_two_site(left, w1, w2, right) -> torch.Tensor:
    """``H_eff`` as a matrix ``(a' s' t' b', a s t b)``."""
    m = torch.einsum("xwa,wpsv,vqtu,yub->xpqyastb", left, w1, w2, right)
    n = left.shape[0] * w1.shape[1] * w2.shape[1] * right.shape[0]
    return m.reshape(n, n)


def expectation(mps: MPS, mpo: MPO) -> torch.Tensor:
    """``<ψ|H|ψ>`` (not divided by the norm)."""
    env = torch.ones(1, 1, 1, dtype=mps.dtype, device=mps.device)
    for a, w in zip(mps.cores, mpo.cores):
        env = _left_env(env, a, w)
    return env.reshape(())


# ------------------------------------------------------------------------------ checks
def check_hermitian(mpo: MPO, *, rtol: float = 1e-10, n_probes: int = 3) -> None:
    """Raise :class:`DataError` if a square real MPO is detectably not symmetric.

    Cheap sufficient test first: every core symmetric in its physical legs. Otherwise compare
    ``<x|H|y>`` with ``<y|H|x>`` for random Gaussian product vectors (``E[(xᵀAy)²] = ||A||_F²``
    for ``A = H - Hᵀ``, so any asymmetry that is not tiny relative to ``||H||_F`` is found).
    """
    if mpo.in_dims != mpo.out_dims:
        raise ShapeError(f"the Hamiltonian MPO must be square: out dims {mpo.out_dims} != in dims {mpo.in_dims}")
    if all(torch.allclose(c, c.transpose(1, 2), rtol=0.0, atol=1e-14 * max(float(c.abs().max()), 1e-300))
           for c in mpo.cores):
        return
    gen = torch.Generator().manual_seed(20241030)
    scale = float(mpo.norm())
    for _ in range(n_probes):
        xs = [torch.randn(d, generator=gen, dtype=mpo.dtype).to(mpo.device) for d in mpo.in_dims]
        ys = [torch.randn(d, generator=gen, dtype=mpo.dtype).to(mpo.device) for d in mpo.in_dims]
        ex = mpo.cores[0].new_ones(1)
        ey = mpo.cores[0].new_ones(1)
        for x, y, w in zip(xs, ys, mpo.cores):
            ex = torch.einsum("a,s,astb,t->b", ex, x, w, y)  # <x|H|y>
            ey = torch.einsum("a,s,astb,t->b", ey, y, w, x)  # <y|H|x>
        if abs(float(ex[0] - ey[0])) > rtol * scale:
            raise DataError(f"the MPO is not Hermitian: <x|H|y> - <y|H|x> = {float(ex[0] - ey[0]):.3g} "
                            f"for random product vectors (||H||_F = {scale:.3g})", field="H")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ------------------------------------------------------------------------- local solvers
def _orthonormal_rows(vectors: list[torch.Tensor]) -> torch.Tensor | None:
    """Orthonormal basis (r, dim) of the span of the given vectors (directions below 1e-13 dropped)."""
    if not vectors:
        return None
    m = torch.stack(vectors)  # (k, dim)
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    keep = s > 1e-13
    return vh[keep] if bool(keep.any()) else None


def _davidson(apply, x0: torch.Tensor, diag: torch.Tensor, project, tol: float, max_iter: int,
              max_space: int = 24) -> tuple[float, torch.Tensor, float]:
    """Lowest eigenpair of a symmetric operator restricted to the range of ``project``.

    Davidson (J. Comput. Phys. 17, 87 (1975)) with the diagonal preconditioner
    ``t = r / (θ - diag)``; the search space restarts from the current Ritz vector when it
    reaches ``max_space`` vectors. Returns ``(θ, x, ||r||)`` with ``x`` normalised.
    """
    dim = x0.numel()
    max_space = max(2, min(max_space, dim))
    basis = x0.new_zeros(max_space, dim)  # (m, dim) orthonormal rows
    images = x0.new_zeros(max_space, dim)  # (m, dim) apply(basis)
    small = x0.new_zeros(max_space, max_space)  # basis · images^T
    x = project(x0)
    basis[0] = x / x.norm()
    images[0] = apply(basis[0])
    small[0, 0] = basis[0] @ images[0]
    m = 1
    theta, rnorm = 0.0, math.inf
    for _ in range(max_iter):
        evals, evecs = torch.linalg.eigh(small[:m, :m])
        theta, c = float(evals[0]), evecs[:, 0]
        x, ax = c @ basis[:m], c @ images[:m]
        r = ax - theta * x
        rnorm = float(r.norm())
        if rnorm <= tol:
            break
        denom = theta - diag
        floor = 1e-8 * max(abs(theta), 1e-300)
        denom = torch.where(denom.abs() < floor, torch.full_like(denom, floor), denom)
        t = project(r / denom)
        if m == max_space:  # restart from the Ritz vector
            norm_x = x.norm()
            basis[0], images[0] = x / norm_x, ax / norm_x
            small[0, 0] = basis[0] @ images[0]
            m = 1
        new = None
        for candidate in (t, project(r)):  # fall back to the plain residual if t lies in the basis
            before = float(candidate.norm())
            for _ in range(2):  # classical Gram–Schmidt, twice ("twice is enough")
                candidate = candidate - basis[:m].T @ (basis[:m] @ candidate)
            after = float(candidate.norm())
            if after > 1e-8 * before and after > 0.0:
                new = candidate / after
                break
        if new is None:
            break  # the search space cannot grow: x is exact within it
        basis[m] = new
        images[m] = apply(new)
        row = basis[: m + 1] @ images[m]  # (m+1,) new column of the projected matrix
        small[m, : m + 1] = row
        small[: m + 1, m] = row
        m += 1
    return theta, x, rnorm


def _local_ground(left: torch.Tensor, op1: _SiteOperator, op2: _SiteOperator, right: torch.Tensor,
                  theta0: torch.Tensor, overlaps: list[torch.Tensor], tol: float, max_iter: int,
                  dense_limit: int) -> tuple[float, torch.Tensor, float]:
    """Lowest eigenpair of ``H_eff`` orthogonal to the ``overlaps`` vectors (all shaped like θ)."""
    shape = theta0.shape
    dim = theta0.numel()
    q = _orthonormal_rows([p.reshape(-1) for p in overlaps])
    n_proj = 0 if q is None else q.shape[0]
    if n_proj >= dim:
        raise ConfigError(f"a two-site space of dimension {dim} cannot hold a state orthogonal to {n_proj} "
                          "earlier states; increase max_bond")
    if dim <= dense_limit:
        h = _dense_two_site(left, op1.core, op2.core, right)
        if q is None:
            evals, evecs = torch.linalg.eigh(0.5 * (h + h.T))
            return float(evals[0]), evecs[:, 0].reshape(shape), 0.0
        _, _, vh = torch.linalg.svd(q, full_matrices=True)
        comp = vh[n_proj:]  # (dim - r, dim) orthonormal complement of span(q)
        hc = comp @ h @ comp.T
        evals, evecs = torch.linalg.eigh(0.5 * (hc + hc.T))
        return float(evals[0]), (evecs[:, 0] @ comp).reshape(shape), 0.0

    def project(v: torch.Tensor) -> torch.Tensor:
        return v if q is None else v - q.T @ (q @ v)

    def apply(v: torch.Tensor) -> torch.Tensor:
        return project(_apply_two_site(left, op1, op2, right, v.reshape(shape)).reshape(-1))

    x0 = theta0.reshape(-1)
    if float(project(x0).norm()) < 1e-8 * float(x0.norm()):
        gen = torch.Generator().manual_seed(dim)
        x0 = torch.randn(dim, generator=gen, dtype=theta0.dtype).to(theta0.device)
    diag = _diag_two_site(left, op1.core, op2.core, right).reshape(-1)
    energy, vec, rnorm = _davidson(apply, x0, diag, project, tol, max_iter)
    return energy, vec.reshape(shape), rnorm


# ------------------------------------------------------------------------------- driver
def _sweep_state(h: MPO, psi: MPS, previous: list[MPS], *, max_bond: int, cutoff: float | None, n_sweeps: int,
                 min_sweeps: int, tol: float, eig_tol: float, max_eig_iter: int, dense_limit: int,
                 state_index: int) -> tuple[MPS, list[dict], bool]:
    n = h.n_sites
    w = h.cores
    ops = [_SiteOperator(c) for c in w]
    cores = list(psi.canonicalize(0).cores)
    cores[0] = cores[0] / torch.linalg.norm(cores[0])
    one3 = cores[0].new_ones(1, 1, 1)
    one2 = cores[0].new_ones(1, 1)
    left_env: list[torch.Tensor | None] = [one3] + [None] * n
    right_env: list[torch.Tensor | None] = [None] * n + [one3]
    for k in range(n - 1, 1, -1):
        right_env[k] = _right_env(right_env[k + 1], cores[k], w[k])
    # overlap environments with the earlier states: (bra = ψ_j bond, ket = current bond)
    lo = [[one2] + [None] * n for _ in previous]
    ro = [[None] * n + [one2] for _ in previous]
    for j, prev in enumerate(previous):
        for k in range(n - 1, 1, -1):
            t = torch.tensordot(cores[k], ro[j][k + 1], dims=([2], [1]))  # (ket, s, bra')
            ro[j][k] = torch.tensordot(prev.cores[k], t, dims=([1, 2], [1, 2]))  # (bra, ket)

    history: list[dict] = []
    previous_energy = math.inf
    converged = False
    schedule = [(i, "right") for i in range(n - 1)] + [(i, "left") for i in range(n - 2, -1, -1)]
    for sweep in range(n_sweeps):
        start = time.perf_counter()
        max_trunc, max_res, max_d, energy = 0.0, 0.0, 1, math.inf
        for i, direction in schedule:
            theta = merge(cores[i], cores[i + 1])  # (D, d_i, d_{i+1}, D')
            projections = [torch.einsum("xy,xsm,mtz,zw->ystw", lo[j][i], prev.cores[i], prev.cores[i + 1], ro[j][i + 2])
                           for j, prev in enumerate(previous)]
            energy, theta, res = _local_ground(left_env[i], ops[i], ops[i + 1], right_env[i + 2], theta, projections,
                                               eig_tol, max_eig_iter, dense_limit)
            a, b, s, discarded = split(theta, 1, max_bond=max_bond, cutoff=cutoff,
                                       absorb="right" if direction == "right" else "left")
            kept = torch.linalg.norm(s)
            if direction == "right":
                b = b / kept
            else:
                a = a / kept
            cores[i], cores[i + 1] = a, b
            max_trunc = max(max_trunc, float(discarded) ** 2)
            max_res = max(max_res, res)
            max_d = max(max_d, s.shape[0])
            if direction == "right":
                left_env[i + 1] = _left_env(left_env[i], a, w[i])
                for j, prev in enumerate(previous):
                    t = torch.tensordot(lo[j][i], a, dims=([1], [0]))  # (bra, s, ket')
                    lo[j][i + 1] = torch.tensordot(prev.cores[i], t, dims=([0, 1], [0, 1]))  # (bra', ket')
            else:
                right_env[i + 1] = _right_env(right_env[i + 2], b, w[i + 1])
                for j, prev in enumerate(previous):
                    t = torch.tensordot(b, ro[j][i + 2], dims=([2], [1]))  # (ket, s, bra')
                    ro[j][i + 1] = torch.tensordot(prev.cores[i + 1], t, dims=([1, 2], [1, 2]))  # (bra, ket)
        history.append({"state": state_index, "sweep": sweep, "energy": energy, "truncation_error": max_trunc,
                        "max_bond": max_d, "max_residual": max_res, "seconds": time.perf_counter() - start})
        if sweep + 1 >= min_sweeps and abs(energy - previous_energy) < tol:
            converged = True
            break
        previous_energy = energy
    return MPS(cores), history, converged


def dmrg(H: MPO, n_states: int = 1, *, max_bond: int = 32, cutoff: float | None = 1e-12, n_sweeps: int = 10,
         tol: float = 1e-10, initial: MPS | Sequence[MPS] | None = None, generator: torch.Generator | None = None,
         eig_tol: float | None = None, max_eig_iter: int = 200, min_sweeps: int = 2, dense_limit: int = 400,
         progress: bool = False) -> DMRGResult:
    """Lowest ``n_states`` eigenpairs of a Hermitian MPO by two-site DMRG.

    Parameters
    ----------
    H : square real MPO, cores ``(Dw, d, d, Dw')``; must be symmetric (checked where detectable).
    n_states : number of states; excited states by orthogonal projection (module docstring).
    max_bond : largest MPS bond dimension (>= 1).
    cutoff : relative singular-value cutoff of each two-site split (``None`` or 0: none).
    n_sweeps : most sweeps (each left-to-right and back) per state.
    tol : energy convergence of a state between sweeps, absolute, in ``H``'s units.
    initial : one MPS (ground-state guess) or one per state; default random.
    generator : for the random initial states.
    eig_tol : residual-norm tolerance of the local eigensolver (default ``tol``).
    max_eig_iter : most Davidson iterations per local problem.
    min_sweeps : sweeps always performed.
    dense_limit : local problems up to this dimension are diagonalised densely.
    progress : show a progress bar over states.

    Returns
    -------
    :class:`DMRGResult` with energies in ``H``'s units.

    >>> import torch
    >>> from entangle.vib import PolynomialTT, dmrg, hamiltonian_mpo, ho_dvr, potential_mpo
    >>> v = PolynomialTT.from_terms([(0.5, (2, 0, 0)), (2.0, (0, 2, 0)), (4.5, (0, 0, 2))])  # ω = 1, 2, 3
    >>> bases = [ho_dvr(8, 1.0), ho_dvr(8, 2.0), ho_dvr(8, 3.0)]
    >>> h = hamiltonian_mpo(potential_mpo(v.cores, v.basis_values, [b.grid for b in bases]),
    ...                     [b.kinetic for b in bases])
    >>> result = dmrg(h, 4, generator=torch.Generator().manual_seed(0))
    >>> [round(float(e), 8) for e in result.energies]
    [3.0, 4.0, 5.0, 5.0]
    """
    if not isinstance(H, MPO):
        raise ShapeError(f"H must be an entangle.tn.MPO, got {type(H).__name__}")
    if H.dtype.is_complex or not H.dtype.is_floating_point:
        raise DataError(f"dmrg supports real floating-point MPOs, got dtype {H.dtype}", field="H")
    _check_int("n_states", n_states, 1)
    _check_int("max_bond", max_bond, 1)
    _check_int("n_sweeps", n_sweeps, 1)
    _check_int("min_sweeps", min_sweeps, 1)
    _check_int("max_eig_iter", max_eig_iter, 1)
    if cutoff is not None and not (math.isfinite(cutoff) and cutoff >= 0):
        raise ConfigError(f"cutoff must be a finite number >= 0 or None, got {cutoff!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"tol must be a finite number >= 0, got {tol!r}")
    dims = H.in_dims
    check_hermitian(H)
    size = math.prod(dims)
    if n_states > size:
        raise ConfigError(f"requested {n_states} states but the Hilbert space {dims} has dimension {size}")
    for k, c in enumerate(H.cores):
        if not torch.isfinite(c).all():
            raise DataError("non-finite entry", field=f"H.cores[{k}]")
    if initial is None:
        guesses: list[MPS | None] = [None] * n_states
    elif isinstance(initial, MPS):
        guesses = [initial] + [None] * (n_states - 1)
    else:
        guesses = list(initial)
        if len(guesses) != n_states:
            raise ConfigError(f"initial must hold one MPS per state ({n_states}), got {len(guesses)}")
    for k, g in enumerate(guesses):
        if g is not None and (not isinstance(g, MPS) or g.dims != dims):
            raise ShapeError(f"initial state {k} must be an MPS over {dims}, got "
                             f"{g.dims if isinstance(g, MPS) else type(g).__name__}")
    eig_tol = tol if eig_tol is None else eig_tol
    dtype = H.dtype
    if H.n_sites == 1:
        evals, evecs = torch.linalg.eigh(H.cores[0][0, :, :, 0])
        states = [MPS([evecs[:, k].reshape(1, -1, 1)]) for k in range(n_states)]
        return DMRGResult(evals[:n_states].clone(), states, [], [True] * n_states,
                          torch.eye(n_states, dtype=dtype, device=H.device))

    states: list[MPS] = []
    history: list[dict] = []
    converged: list[bool] = []
    for k in tqdm(range(n_states), desc="dmrg states", disable=not progress):
        guess = guesses[k]
        if guess is None:
            guess = MPS.random(dims, bond_dim=min(max_bond, 8), generator=generator, dtype=dtype)
        psi, hist, ok = _sweep_state(H, guess.to(H.device, dtype), states, max_bond=max_bond, cutoff=cutoff,
                                     n_sweeps=n_sweeps, min_sweeps=min_sweeps, tol=tol, eig_tol=eig_tol,
                                     max_eig_iter=max_eig_iter, dense_limit=dense_limit, state_index=k)
        states.append(psi)
        history.extend(hist)
        converged.append(ok)
    energies = torch.stack([expectation(s, H) / s.inner(s) for s in states])
    order = torch.argsort(energies)
    states = [states[int(i)] for i in order]
    converged = [converged[int(i)] for i in order]
    overlaps = torch.stack([torch.stack([a.inner(b) for b in states]) for a in states])
    return DMRGResult(energies[order], states, history, converged, overlaps)
