"""Run profiles: every size, the device and the dtype of a chapter come from here.

A profile is selected by the environment variable ``BOOK_PROFILE``:

* ``smoke``: small sizes that run every chapter in minutes on a 2-core CPU (CI);
* ``paper``: the sizes of the paper (Gegenfurtner, Jacobsen et al., 2026, Sec. 5 and App. C, D).

Without ``BOOK_PROFILE`` the default is ``paper`` when CUDA is available and ``smoke`` otherwise.
Only the sizes differ between profiles: models, data and methods are the same, so the smoke run
exercises the paper's code path end to end.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

PROFILE_ENV_VAR = "BOOK_PROFILE"
SEED_ENV_VAR = "BOOK_SEED"
DEFAULT_SEED = 0
"""The seed of both profiles when ``$BOOK_SEED`` is not set: the numbers the book shows."""
PROFILE_NAMES = ("smoke", "paper")
CPU_GEODESIC_CHUNK = 1
"""Curves per geodesic solve of the paper-size toy networks on a CPU. Chapter 8's network (K = 1,185,
4,000 pairs, dopri8, compiled, one thread) took 1.58 s a curve alone against 1.75 s in pairs (24
curves, 2026-12-02): a batch of two outgrows the cache that one fits, and the worker processes
already use every core."""


@dataclass(frozen=True)
class FlowMatchingSizes:
    """Sizes of the 1D flow-matching problem (Sec. 5.1, App. C.1)."""

    n_pairs: int
    """Size N of the deterministic dataset {t_i = i/N, x0_i, x*_i} (App. C.1)."""
    hidden: tuple[int, ...]
    """Hidden widths of the velocity MLP u_theta(x, t)."""
    train_steps: int
    """Full-batch Adam steps to the memorising minimum theta*."""
    learning_rate: float
    n_generate: int
    """Number of base samples x0 ~ p0 pushed through the generator."""
    euler_steps: int
    """Uniform Euler steps used to solve eq (2)."""


@dataclass(frozen=True)
class MemorisationSizes:
    """Sizes of the memorisation chapter (Def. 2.1, eq 8)."""

    n_samples: int
    """Generated / target samples per curve."""
    n_thresholds: int
    """Number of thresholds c on the memorisation-ratio curves."""


@dataclass(frozen=True)
class GeometrySizes:
    """Sizes of the loss-manifold chapters (Sec. 2.2.1, 4.3, App. A, B.2, B.3)."""

    banana_samples: int
    """Laplace velocities v ~ N(0, H^-1) on the two-parameter banana loss."""
    network_geodesics: int
    """Geodesics solved on the small flow-matching network's loss."""
    christoffel_checks: int
    """Random (theta, velocity) pairs comparing eq (19) with Definition A.1."""


@dataclass(frozen=True)
class LaplaceSizes:
    """Sizes of the Algorithm 1 chapter (Sec. 2.2, 3; App. D.2)."""

    lanczos_k: int
    """Lanczos iterations on the full network's Hessian (the paper uses k = 1000 on 3,584 parameters)."""
    posterior_samples: int
    """S, models drawn from each approximate posterior."""
    base_samples: int
    """N, base points x0 pushed through every model."""


@dataclass(frozen=True)
class Theorem41Sizes:
    """Sizes of the Theorem 4.1 chapter (Sec. 4.1-4.2, App. B.1)."""

    line_points: int
    """Grid points along the segment between two training points (and along ||delta||)."""
    taylor_samples: int
    """Antithetic Monte Carlo pairs v, -v per perturbation scale in the Sec. 4.1 Taylor check."""


@dataclass(frozen=True)
class Experiment1DSizes:
    """Sizes of the 1D experiment (Sec. 5.1, App. C.1, C.1.1; Figs. 4, 5, 8)."""

    posterior_samples: int
    """S models drawn from each of the Euclidean and Riemannian Laplace approximations."""
    base_samples: int
    """N base points x0 ~ p0 pushed through every model (N x S points per method, eq 35-36)."""
    kl_repetitions: int
    """Repetitions of the KL estimate (the paper: 50) ..."""
    kl_subset: int
    """... each on this many generated samples (the paper: 100)."""
    field_grid: tuple[int, int]
    """(x, t) grid of the Fig. 4 velocity-field statistics."""
    geodesic_chunk: int
    """Curves per batched geodesic solve (``CPU_GEODESIC_CHUNK`` on a CPU; larger on a GPU)."""
    checkpoint: bool
    """Save solved geodesics atomically under the build folder and resume from them."""


@dataclass(frozen=True)
class Experiment2DSizes:
    """Sizes of the 2D experiment (App. C.2; Figs. 9, 10, 11)."""

    n_pairs: int
    """Size N of the deterministic flow-matching dataset over the six memorised points."""
    hidden: tuple[int, ...]
    """Hidden widths of the 2D velocity MLP."""
    train_steps: int
    learning_rate: float
    points: int
    """Generated points per method and eta, and target points, for W1 (the paper: 3000)."""
    etas_top: tuple[float, ...]
    """Scales eta of v along the Hessian's top eigenvector (App. C.2)."""
    etas_full: tuple[float, ...]
    """Scales eta of v ~ N(0, H_+^-1) over all kept eigenpairs (not in the paper)."""
    full_models: int
    """Models S drawn from the full-covariance posterior (one geodesic each); points / S base points per model."""
    trajectories: int
    """Trajectories drawn per panel of Fig. 10."""
    euler_steps: int
    """Uniform Euler steps of the sampler, eq (2)."""
    geodesic_chunk: int
    """Curves per batched geodesic solve of the full-covariance posterior."""
    checkpoint: bool
    """Save the full-covariance geodesics atomically under the build folder and resume from them."""


@dataclass(frozen=True)
class PositivePartSizes:
    """Sizes of the positive-part chapter: the 1D and 2D headline results under other choices of
    N(0, H_+^{-1}) than the book's floor (App. D.2)."""

    floors: tuple[float, ...]
    """Eigenvalue floors tau / lambda_1: keep the eigenpairs above tau, drop the rest."""
    prior_precisions: tuple[float, ...]
    """Prior precisions delta / lambda_1: keep every positive eigenpair, add delta to it, and give every
    other direction the prior variance 1 / delta (a Gaussian prior N(0, delta^-1 I) on theta)."""
    models: int
    """S models per method and choice, in each of 1D and 2D."""
    base_samples: int
    """N base points every model moves (1D and 2D)."""
    geodesic_chunk: int
    """Curves per batched geodesic solve."""
    checkpoint: bool
    """Save each choice's solved geodesics atomically under the build folder and resume from them."""


@dataclass(frozen=True)
class DensityBoxSizes:
    """Sizes of one box on which the likelihood chapter evaluates and integrates densities (Sec. 3.1)."""

    posterior_samples: int
    """S models drawn from each of the Euclidean and Riemannian Laplace approximations."""
    points_per_axis: int
    """Plotting grid points per axis; also the initial lattice of the adaptive quadrature."""
    bandwidth: float
    """Gaussian kernel width of the KDE check (at least the grid spacing)."""
    quadrature_levels: int
    """Refinement levels of the adaptive quadrature (the finest cell is 2^-(levels-1) grid cells)."""
    quadrature_tolerance: float
    """Largest change of a cell's integral under one split that leaves the cell unsplit."""
    integrated_models: int
    """Models per ensemble whose mass is integrated (normalisation holds for every single theta)."""


@dataclass(frozen=True)
class LikelihoodSizes:
    """Sizes of the exact-likelihood chapter (Sec. 3.1, eq 22)."""

    one_d: DensityBoxSizes
    two_d: DensityBoxSizes
    generated_points: int
    """Samples generated per method (split evenly over the S models) for the KDE and mass checks."""
    test_points: int
    """Held-out target samples for the test log-likelihood."""
    ode_steps: int
    """RK4 steps of every reverse likelihood solve (100 agree with dopri5 to 1e-3 in log-density)."""


@dataclass(frozen=True)
class CIFARSizes:
    """Sizes of the CIFAR-10 experiment (Sec. 5.2, App. D; Figs. 6, 7, 12, 13, 14)."""

    images: str
    """``cifar10`` (the local archive, support.data.cifar10) or ``digits`` (the bundled stand-in, support.data.image_data)."""
    n_train: int
    """Training images N (App. D.1: 1000)."""
    unet: str
    """``ddpm-cifar10-32`` (35.7 M parameters) or ``smoke`` (support.models.cifar_unet)."""
    dtype: torch.dtype
    """Float type of training, Hessian and geodesics (float32: the U-Net is a float32 model)."""
    epochs: int
    batch_size: int
    """Training batch size (not stated in the paper; 128 is ddpm-cifar10-32's)."""
    learning_rate: float
    checkpoint_every: int
    """Epochs between (atomic) checkpoints; each is scored for selection."""
    compile: bool
    """torch.compile the training step (on when CUDA is present: the compile pays off there)."""
    mixed_precision: bool
    """bf16 autocast of the training step (on when CUDA is present)."""
    selection_images: int
    """Images generated at every checkpoint for the selection score (Frechet distance)."""
    ddim_steps: int
    """DDIM steps of the generator (App. D.1: 50)."""
    hessian_batch: int
    """Training images per loss-manifold batch (App. D.3: 64)."""
    n_batches: int
    """Batches B whose Hessian spectra are compared (Fig. 12: 5)."""
    lanczos_k: int
    """Lanczos iterations per batch (App. D.2: 1000 of the 3,584 conv_in parameters)."""
    posterior_samples: int
    """S perturbations per method and eta (App. D.4: 10)."""
    images_per_model: int
    """N images generated by every perturbed model (App. D.4: 100)."""
    etas: tuple[float, ...]
    """Scales eta of v ~ N(0, H_+^-1) on the Fig. 13 axis."""
    direction_stds: float
    """Euclidean length of the top/bottom eigenvector velocities of Figs. 6 and 7, in Laplace standard
    deviations along the top eigenvector (1 / sqrt(lambda_1))."""
    path_times: tuple[float, ...]
    """Times t of the Fig. 7 paths theta* + t v and alpha(t) (starting at 0)."""
    figure_columns: int
    """Fixed base samples x0 (columns) of Figs. 6 and 14."""
    geodesic_rtol: float
    geodesic_atol: float
    geodesic_max_nfe: int
    """Stopping criterion of App. D.3.1: a geodesic needing more evaluations is filtered."""
    geodesic_chunk: int
    """Geodesics per batched (vmapped) solve."""
    models_per_pass: int
    """Generators sharing one vmapped U-Net pass during generation."""


@dataclass(frozen=True)
class DigitsSizes(CIFARSizes):
    """Sizes of the digits chapter: chapter 12's experiment on native 8 x 8 scans, at a size where the MAP
    memorises on a CPU, with the sample-quality measures the paper does not have."""

    classifier_epochs: int
    """Adam epochs of the feature classifier, trained on half of the held-out digits."""
    denoise_timestep: int
    """DDPM timestep t of the one-step Tweedie denoising that tests whether a perturbed image is a
    training image plus unstructured noise."""
    inertial_sigmas: tuple[float, ...]
    """Stopping noise levels sigma of the training-free inertial baseline (chapter 11) on the same digits."""
    sink_images: int
    """Distinct base samples x0 whose images along the top / bottom eigenvector measure the Fig. 6 sink."""


@dataclass(frozen=True)
class ToyGeodesicSolver:
    """The solver of the toy experiments' posterior geodesics (``posterior_ensembles``, chapters 8, 9, 14, 15)."""

    method: str
    """The embedded pair (:data:`support.core.dormand_prince.PAIRS`). On chapter 8's network dopri8 at
    rtol 1e-6 is more accurate than dopri5 at rtol 1e-7 with 0.73x its evaluations, 1.6x faster
    (``benchmarks/geodesic_integrators.py``); the paper profile, whose time goes to geodesics, uses it.
    The smoke profile keeps dopri5 at 1e-7, the setting its five-seed table was checked with."""
    rtol: float
    atol: float
    compile: bool
    """``torch.compile`` the right-hand side: 3x faster per evaluation on a CPU, after about 10 s of
    compilation per batch size, so on for the paper's thousands of geodesics and off for the smoke
    run's dozens. Compiled and eager arithmetic round differently, which is why the profile, not the
    caller, fixes it."""
    workers: int
    """Processes that share the geodesic batches (``solve_geodesics(workers=...)``). A batch is solved
    the same way in any process, so this is a speed setting that changes no number: the paper profile
    on a CPU uses every core it may run on, the smoke profile one (CI runs chapters side by side)."""


@dataclass(frozen=True)
class LatentGeometrySizes:
    """Sizes of the latent-geometry chapter (beyond the paper: phases and Lipschitz constant of the 2D flow,
    the Hessian metric of an exponential family, the spacetime geometry of denoising and DiffED)."""

    phase_grid: int
    """Points per axis of the latent grid over [-3, 3]^2 on which phases and Lipschitz constants are mapped."""
    phase_models: int
    """Members of chapter 9's full-covariance ensembles (per method) whose phases are mapped."""
    ensemble_eta: float
    """The scale eta of chapter 9's full-covariance ensembles that this chapter studies (one of ``etas_full``)."""
    family_parameters: int
    """Natural parameters of the Gaussian family drawn to fit the convex log-partition network."""
    family_samples: int
    """Samples of the family drawn at each of those parameters."""
    family_hidden: int
    """Width of the two hidden layers of the input-convex network."""
    family_steps: int
    """Full-batch Adam steps of its fit."""
    bregman_sizes: tuple[int, ...]
    """Sample sizes N at which the posterior's N-th root is compared with exp(-Bregman divergence)."""
    curve_points: int
    """Points of a discretised spacetime curve (DiffED)."""
    curve_controls: int
    """Interior B-spline control points of a curve whose energy is minimised."""
    curve_steps: int
    """Adam steps of that minimisation."""
    diagnostic_samples: int
    """Generated points per method whose DiffED to the training points is measured."""


@dataclass(frozen=True)
class Profile:
    """Everything that differs between a CI run and a paper-scale run."""

    name: str
    device: torch.device
    dtype: torch.dtype
    seed: int
    """Seed of every random draw (``$BOOK_SEED`` overrides the profile's default)."""
    intra_op_threads: int
    """Threads of torch's intra-op pool and of numpy/scipy's BLAS (see
    :func:`support.infra.reproducibility.fix_thread_count`): fixed, so that a run's numbers depend on
    profile and seed only, not on the core count or on how the chapter was run."""
    toy_geodesics: ToyGeodesicSolver
    """How chapters 8, 9, 14 and 15 solve their posterior geodesics."""
    flow_matching: FlowMatchingSizes
    memorisation: MemorisationSizes
    geometry: GeometrySizes
    laplace: LaplaceSizes
    theorem_4_1: Theorem41Sizes
    experiment_1d: Experiment1DSizes
    experiment_2d: Experiment2DSizes
    positive_part: PositivePartSizes
    likelihood: LikelihoodSizes
    cifar: CIFARSizes
    digits: DigitsSizes
    latent_geometry: LatentGeometrySizes

    def describe(self) -> str:
        """One line for chapters to print, so every output says which profile produced it."""
        return (f"profile={self.name} device={self.device} dtype={self.dtype} seed={self.seed} "
                f"threads={self.intra_op_threads}")

    @property
    def run_name(self) -> str:
        """The profile's name, with the seed appended when it is not the profile's default (build folders)."""
        return self.name if self.seed == DEFAULT_SEED else f"{self.name}-seed{self.seed}"


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or ``taskset`` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpu_or_cpu() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        device=torch.device("cpu"),
        dtype=torch.float64,
        seed=DEFAULT_SEED,
        intra_op_threads=1,
        toy_geodesics=ToyGeodesicSolver(method="dopri5", rtol=1e-7, atol=1e-9, compile=False, workers=1),
        flow_matching=FlowMatchingSizes(
            n_pairs=2000, hidden=(32, 32), train_steps=2500, learning_rate=3e-3,
            n_generate=400, euler_steps=100,
        ),
        memorisation=MemorisationSizes(n_samples=2000, n_thresholds=99),
        geometry=GeometrySizes(banana_samples=2000, network_geodesics=64, christoffel_checks=20),
        laplace=LaplaceSizes(lanczos_k=100, posterior_samples=8, base_samples=300),
        theorem_4_1=Theorem41Sizes(line_points=401, taylor_samples=256),
        experiment_1d=Experiment1DSizes(
            posterior_samples=16, base_samples=300, kl_repetitions=50, kl_subset=100,
            field_grid=(61, 41), geodesic_chunk=2, checkpoint=False,
        ),
        experiment_2d=Experiment2DSizes(
            n_pairs=2000, hidden=(32, 32), train_steps=2500, learning_rate=3e-3, points=1000,
            etas_top=(1.0, 4.0, 16.0), etas_full=(0.1, 0.3, 1.0), full_models=4, trajectories=12,
            euler_steps=100, geodesic_chunk=2, checkpoint=False,
        ),
        positive_part=PositivePartSizes(
            floors=(1e-2, 1e-3, 1e-4), prior_precisions=(1e-2, 1e-3), models=6, base_samples=300, geodesic_chunk=2,
            checkpoint=False,
        ),
        likelihood=LikelihoodSizes(
            one_d=DensityBoxSizes(posterior_samples=8, points_per_axis=601, bandwidth=0.1, quadrature_levels=8,
                                  quadrature_tolerance=1e-5, integrated_models=8),
            two_d=DensityBoxSizes(posterior_samples=4, points_per_axis=61, bandwidth=0.2, quadrature_levels=7,
                                  quadrature_tolerance=1e-4, integrated_models=1),
            generated_points=2000, test_points=1000, ode_steps=100,
        ),
        cifar=CIFARSizes(
            images="digits", n_train=200, unet="smoke", dtype=torch.float32, epochs=40,
            batch_size=32, learning_rate=2e-3, checkpoint_every=10, compile=False, mixed_precision=False,
            selection_images=32, ddim_steps=50, hessian_batch=16, n_batches=3, lanczos_k=24,
            posterior_samples=3, images_per_model=16, etas=(0.25, 0.5, 1.0), direction_stds=3.0,
            path_times=(0.0, 0.25, 0.5, 0.75, 1.0), figure_columns=6, geodesic_rtol=1e-5, geodesic_atol=1e-6,
            geodesic_max_nfe=400, geodesic_chunk=1, models_per_pass=1,
        ),
        digits=DigitsSizes(
            images="digits-8x8", n_train=32, unet="digits-8x8", dtype=torch.float32, epochs=1000,
            batch_size=32, learning_rate=2e-3, checkpoint_every=100, compile=False, mixed_precision=False,
            selection_images=64, ddim_steps=25, hessian_batch=8, n_batches=3, lanczos_k=48,
            posterior_samples=3, images_per_model=32, etas=(0.01, 0.03, 0.1), direction_stds=30.0,
            path_times=(0.0, 1 / 30, 0.1, 1 / 3, 1.0), figure_columns=8, geodesic_rtol=1e-5, geodesic_atol=1e-6,
            geodesic_max_nfe=400, geodesic_chunk=3, models_per_pass=1,
            classifier_epochs=30, denoise_timestep=100, inertial_sigmas=(1.0, 2.0, 3.0, 4.0), sink_images=16,
        ),
        latent_geometry=LatentGeometrySizes(
            phase_grid=61, phase_models=4, ensemble_eta=0.3, family_parameters=256, family_samples=64,
            family_hidden=32, family_steps=1500, bregman_sizes=(10, 100, 1000), curve_points=48, curve_controls=6,
            curve_steps=600, diagnostic_samples=24,
        ),
    )


def _paper() -> Profile:
    return Profile(
        name="paper",
        device=_gpu_or_cpu(),
        dtype=torch.float64,
        seed=DEFAULT_SEED,
        intra_op_threads=1,
        toy_geodesics=ToyGeodesicSolver(method="dopri8", rtol=1e-6, atol=1e-8, compile=True,
                                        workers=_usable_cores() if not torch.cuda.is_available() else 1),
        flow_matching=FlowMatchingSizes(
            n_pairs=4000, hidden=(32, 32), train_steps=10000, learning_rate=3e-3,
            n_generate=1000, euler_steps=100,
        ),
        memorisation=MemorisationSizes(n_samples=10000, n_thresholds=199),
        geometry=GeometrySizes(banana_samples=10000, network_geodesics=1000, christoffel_checks=200),
        laplace=LaplaceSizes(lanczos_k=400, posterior_samples=32, base_samples=1000),
        theorem_4_1=Theorem41Sizes(line_points=2001, taylor_samples=2000),
        experiment_1d=Experiment1DSizes(
            posterior_samples=1000, base_samples=1000, kl_repetitions=50, kl_subset=100,
            field_grid=(121, 101), geodesic_chunk=CPU_GEODESIC_CHUNK if not torch.cuda.is_available() else 250,
            checkpoint=True,
        ),
        experiment_2d=Experiment2DSizes(
            n_pairs=4000, hidden=(32, 32), train_steps=10000, learning_rate=3e-3, points=3000,
            etas_top=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0), etas_full=(0.1, 0.2, 0.3, 0.5, 1.0), full_models=100,
            trajectories=24, euler_steps=100, geodesic_chunk=CPU_GEODESIC_CHUNK if not torch.cuda.is_available() else 100,
            checkpoint=True,
        ),
        positive_part=PositivePartSizes(
            floors=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5), prior_precisions=(1e-1, 1e-2, 1e-3), models=100, base_samples=1000,
            geodesic_chunk=CPU_GEODESIC_CHUNK if not torch.cuda.is_available() else 100, checkpoint=True,
        ),
        likelihood=LikelihoodSizes(
            one_d=DensityBoxSizes(posterior_samples=32, points_per_axis=1201, bandwidth=0.05, quadrature_levels=10,
                                  quadrature_tolerance=1e-6, integrated_models=32),
            two_d=DensityBoxSizes(posterior_samples=16, points_per_axis=101, bandwidth=0.1, quadrature_levels=9,
                                  quadrature_tolerance=1e-5, integrated_models=4),
            generated_points=10000, test_points=5000, ode_steps=200,
        ),
        cifar=CIFARSizes(
            images="cifar10", n_train=1000, unet="ddpm-cifar10-32", dtype=torch.float32, epochs=5000,
            batch_size=128, learning_rate=2e-4, checkpoint_every=50, compile=torch.cuda.is_available(),
            mixed_precision=torch.cuda.is_available(),
            selection_images=1000, ddim_steps=50, hessian_batch=64, n_batches=5, lanczos_k=1000,
            posterior_samples=10, images_per_model=100, etas=(0.1, 0.25, 0.5, 0.75, 1.0), direction_stds=3.0,
            path_times=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), figure_columns=8, geodesic_rtol=1e-5, geodesic_atol=1e-6,
            geodesic_max_nfe=1000, geodesic_chunk=2, models_per_pass=4,
        ),
        digits=DigitsSizes(
            images="digits-8x8", n_train=128, unet="digits-8x8", dtype=torch.float32, epochs=2000,
            batch_size=64, learning_rate=2e-3, checkpoint_every=200, compile=False, mixed_precision=False,
            selection_images=200, ddim_steps=50, hessian_batch=32, n_batches=3, lanczos_k=200,
            posterior_samples=10, images_per_model=100, etas=(0.005, 0.01, 0.02, 0.04, 0.08), direction_stds=30.0,
            path_times=(0.0, 1 / 30, 0.1, 1 / 3, 1.0), figure_columns=8, geodesic_rtol=1e-5, geodesic_atol=1e-6,
            geodesic_max_nfe=1000, geodesic_chunk=10, models_per_pass=1,
            classifier_epochs=60, denoise_timestep=100, inertial_sigmas=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0), sink_images=32,
        ),
        latent_geometry=LatentGeometrySizes(
            phase_grid=201, phase_models=16, ensemble_eta=0.3, family_parameters=2048, family_samples=256,
            family_hidden=64, family_steps=4000, bregman_sizes=(10, 100, 1000, 10000), curve_points=96,
            curve_controls=10, curve_steps=2000, diagnostic_samples=200,
        ),
    )


_BUILDERS = {"smoke": _smoke, "paper": _paper}


def default_profile_name() -> str:
    """``paper`` when CUDA is available, otherwise ``smoke``."""
    return "paper" if torch.cuda.is_available() else "smoke"


def get_profile(name: str | None = None) -> Profile:
    """Return the profile ``name``, else ``$BOOK_PROFILE``, else the default for this machine.

    ``$BOOK_SEED`` (a non-negative integer) replaces the profile's seed, so that every chapter can be
    re-run under other random draws (the README's seed table does this for five seeds).

    Raises
    ------
    ValueError
        If the name is not one of ``PROFILE_NAMES``, or ``$BOOK_SEED`` is not a non-negative integer.
    TypeError
        If the name is not a string.
    """
    if name is None:
        name = os.environ.get(PROFILE_ENV_VAR, "").strip() or default_profile_name()
    if not isinstance(name, str):
        raise TypeError(f"the profile name must be a string, one of {', '.join(PROFILE_NAMES)}; got {name!r}")
    key = name.strip().lower()
    if key not in _BUILDERS:
        raise ValueError(
            f"unknown profile {name!r} (from {PROFILE_ENV_VAR} or the argument); "
            f"choose one of {', '.join(PROFILE_NAMES)}"
        )
    profile = _BUILDERS[key]()
    seed = os.environ.get(SEED_ENV_VAR, "").strip()
    if not seed:
        return profile
    if not seed.isdigit():
        raise ValueError(f"{SEED_ENV_VAR}={seed!r} is not a non-negative integer; unset it or set e.g. {SEED_ENV_VAR}=3")
    return dataclasses.replace(profile, seed=int(seed))
