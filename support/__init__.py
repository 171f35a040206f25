"""Support package for the executable book on Riemannian Bayesian inference for generative models.

Reference: Gegenfurtner, Jacobsen et al. (2026), "Reducing Memorisation in Generative Models
via Riemannian Bayesian Inference". Equation numbers in docstrings refer to that paper.

Layers
------
Six subpackages in five layers (``core`` and ``data`` share one). A module imports only from its
own subpackage and from the layers below it (``tests/test_import_layers.py`` enforces this), so
each layer can be read, tested and reused without the ones above it::

    experiments   the book's experiments: toy problems, the 1D/2D Laplace ensembles, Algorithm 2 on images
        |
    evaluation    measures of what a generator produced: memorisation, divergences, densities, Frechet
        |
    models        generative models: flow matching, DDIM / U-Net / DDPM training, ensembles, baselines, likelihood
        |
    core   data   core: the paper's method on any loss of a flat parameter vector (metric, Christoffel
        |         symbols, geodesics, Lanczos, Laplace); data: targets and image sets (independent of core)
        |
    infra         the book's own infrastructure: profiles, seeding, figure style, results and artefacts

Why this grouping. ``core`` is the small package the method needs and nothing else: it works on
a loss ``L(theta)`` of a flat parameter vector and knows nothing of flows, U-Nets or data, which
is what lets chapters 3-6 test it on closed-form losses and chapter 12 reuse it unchanged on a
35.7M-parameter U-Net. ``data`` knows no model and ``core`` no data, so they share a level.
``models`` turn networks into losses and generators; ``evaluation`` scores samples and densities
and may call a model (the exact likelihood of an ensemble) but never an experiment;
``experiments`` compose everything into what a chapter runs. ``infra`` sits at the bottom because
every layer checkpoints, seeds or reads its sizes from a profile.

Modules
-------
infra.profiles          sizes, device and dtype of a run (``BOOK_PROFILE=smoke|paper``)
infra.reproducibility   one result per profile and seed: the thread count fixed by the profile, then seeding
infra.plotting          the shared figure style and per-method colours
infra.provenance        the commit and the hashes of the sources a chapter's results depend on; what changed since
infra.results           build folder, atomic writes, checkpoints, results JSON with provenance, markdown tables
infra.paper_artefacts   commit a paper-profile run's results and figures to book/paper_results/; show them with provenance
infra.seed_table        which checked claims hold under other seeds (``make seed-table``)
infra.forked_map        independent pieces of work shared among forked CPU processes, results as with one
infra.validation        argument checks shared by every layer (finite, positive integer, non-negative number)
infra.offline_html      the scripts and stylesheets a built page loads from the network (the book renders offline)
infra.sphinx_scripts    a Sphinx extension writing each inline script of a page once (a repeat is a JavaScript error)
infra.notebook_downloads  a Sphinx extension offering each executed chapter as an .ipynb in the page's download menu
infra.browser_check     every built page opened offline in headless Chromium: math, images, tables, JS errors (make check-html)

core.parameters         losses as functions of a flat parameter vector, for any subset of a module
core.monge_metric       G = I + grad L grad L^T (eq 16-18), Sherman-Morrison, the geodesic acceleration (eq 19)
core.mlp_curvature      grad L and v^T H v of an MLP's squared error by hand, S curves in one pass (eq 19's two derivatives)
core.christoffel        Christoffel symbols of any metric by autodiff (Def. A.1) and the general eq (14)
core.dormand_prince     embedded Runge-Kutta pairs (dopri5, tsit5, dopri8) with a step size per curve and an active set
core.geodesics          batched exponential map (dopri5/Euler/RK4, budgets, flags, checkpoints) and App. B.3 (eq 25-26)
core.lanczos            matrix-free Lanczos with full re-orthogonalisation (App. D.2)
core.laplace            exact / Lanczos Laplace approximations, positive part, samplers (Alg. 1, App. D.2)

data.toy_data           Gaussian-mixture targets of the toy experiments (Sec. 5.1, App. C)
data.image_set          the uint8 image container every image source returns
data.cifar10            the CIFAR-10 python archive from a local path: checksum, restricted unpickling, explicit download
data.image_data         image sets: the CIFAR-10 subset, or the bundled scikit-learn digits (32 x 32 stand-in, native 8 x 8)
data.gaussian_family    the Gaussian family in natural parameters: samples, log-partition and Fisher metric in closed form

models.flow_matching    velocity networks, the deterministic FM dataset and loss, generation, closed forms
models.ensembles        vmapped velocity fields and generation for S posterior samples (eq 35-36)
models.baselines        training-free generators: closed-form flow matching, inertial empirical diffusion, KDE
models.likelihood       exact flow log-likelihood (instantaneous change of variables, Sec. 3.1) and eq (22)
models.cifar_unet       the ddpm-cifar10-32 U-Net from its config, the DDPM schedule, the fixed-batch loss of App. D.3
models.ddim             deterministic DDIM generation, its eq (6) flow reading, vmapped generation for many models
models.ddpm_training    MAP training with atomic checkpoints, resume and checkpoint selection (App. D.1)
models.digit_classifier a small CNN on 8 x 8 digits whose features stand in for Inception's (the digits chapter)
models.convex_potential an input-convex network fitted to sufficient statistics; its Hessian is a Fisher metric; Bregman

evaluation.memorisation          Definition 2.1, the memorisation ratio (eq 8) and its K-neighbour variant (App. D.4)
evaluation.divergences           KL(p_* || KDE) and W1 (POT, eq 38) between generated and target samples (Fig. 5, App. C)
evaluation.quadrature            adaptive cell-refining quadrature of peaked densities, Gaussian smoothing (KDE)
evaluation.density_evaluation    densities of an ensemble on a box with the mass and KDE self-checks (Sec. 3.1)
evaluation.frechet               Frechet distance between Gaussian feature fits (FID's formula; the pixel-feature fallback)
evaluation.endpoint_sensitivity  Sec. 4.1: bias and variance of a generated point under weight perturbations
evaluation.ensemble_statistics   standard errors with the model as the unit: per-model statistics, model bootstrap, differences
evaluation.latent_phases         the phases of a flow's latent plane and its local Lipschitz constant (forward mode, through Euler)
evaluation.spacetime             denoising distributions on the spacetime (x, t), their Fisher-Rao lengths, DiffED curves

experiments.toy_losses            closed-form losses with curved valleys (the banana)
experiments.memorising_flow       a flow trained to memorise a small training set, and its exact Laplace approximation
experiments.toy_1d                the memorising 1D flow of Sec. 5.1 and a small 25-parameter variant
experiments.toy_2d                the six memorised points and the memorising 2D flow of App. C.2
experiments.experiment_ensembles  the Laplace ensembles of the 1D and 2D experiment chapters, shared by later chapters
experiments.positive_part_sweep   the 1D and 2D headline results under other eigenvalue floors and prior precisions
experiments.cifar_experiment      Algorithm 2's stages after training: batches, eigen-direction paths, perturbations, App. D.4
experiments.digits_experiment     the digits chapter: data split, sample judge (memorisation, FD, novelty, denoising), sinks
experiments.latent_geometry       beyond the paper: phase maps of the 2D flow and its ensembles, the family metric, DiffED
"""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("infra",),
    ("core", "data"),
    ("models",),
    ("evaluation",),
    ("experiments",),
)
"""The subpackages from the bottom layer up; a module may import its own subpackage and lower layers."""
