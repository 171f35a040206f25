"""Support package for the executable book on Riemannian Bayesian inference for generative models.

Reference: Gegenfurtner, Jacobsen et al. (2026), "Reducing Memorisation in Generative Models
via Riemannian Bayesian Inference". Equation numbers in docstrings refer to that paper.

Modules
-------
profiles       sizes, device and dtype of a run (``BOOK_PROFILE=smoke|paper``)
reproducibility seeding
plotting       the shared figure style and per-method colours
toy_data       Gaussian-mixture targets of the toy experiments (Sec. 5.1, App. C)
flow_matching  velocity networks, the deterministic FM dataset and loss, generation, closed forms
memorisation   Definition 2.1, the memorisation ratio (eq 8) and its K-neighbour variant (App. D.4)
memorising_flow  a flow trained to memorise a small training set, and its exact Laplace approximation
toy_1d         the memorising 1D flow of Sec. 5.1 and a small 25-parameter variant
toy_2d         the six memorised points and the memorising 2D flow of App. C.2
toy_losses     closed-form losses with curved valleys (the banana)
parameters     losses as functions of a flat parameter vector, for any subset of a module
monge_metric   G = I + grad L grad L^T (eq 16-18), Sherman-Morrison, the geodesic acceleration (eq 19)
christoffel    Christoffel symbols of any metric by autodiff (Def. A.1) and the general eq (14)
geodesics      batched exponential map (dopri5/Euler/RK4, budgets, flags) and App. B.3 (eq 25-26)
lanczos        matrix-free Lanczos with full re-orthogonalisation (App. D.2)
laplace        exact / Lanczos Laplace approximations, positive part, samplers (Alg. 1, App. D.2)
ensembles      vmapped velocity fields and generation for S posterior samples (eq 35-36)
experiment_ensembles  the Laplace ensembles of the 1D and 2D experiment chapters, shared by later chapters
endpoint_sensitivity  Sec. 4.1: bias and variance of a generated point under weight perturbations
baselines      training-free generators: closed-form flow matching, inertial empirical diffusion, KDE
likelihood     exact flow log-likelihood (instantaneous change of variables, Sec. 3.1) and eq (22)
quadrature     adaptive cell-refining quadrature of peaked densities, Gaussian smoothing (KDE)
density_evaluation  densities of an ensemble on a box with the mass and KDE self-checks (Sec. 3.1)
divergences    KL(p_* || KDE) and W1 (POT, eq 38) between generated and target samples (Fig. 5, App. C)
cifar10        the CIFAR-10 python archive from a local path: checksum, restricted unpickling, explicit download
cifar_unet     the ddpm-cifar10-32 U-Net from its config, the DDPM schedule, the fixed-batch loss of App. D.3
image_data     image sets: the CIFAR-10 subset or the bundled scikit-learn digits as a stand-in
ddim           deterministic DDIM generation, its eq (6) flow reading, vmapped generation for many models
ddpm_training  MAP training with atomic checkpoints, resume and checkpoint selection (App. D.1)
frechet        Fréchet distance between Gaussian feature fits (FID's formula; the pixel-feature fallback)
cifar_experiment  Algorithm 2's stages after training: batches, eigen-direction paths, perturbations, App. D.4 memorisation
results        build folder, atomic writes, results JSON with provenance, markdown tables
paper_artefacts  commit a paper-profile run's results and figures to book/paper_results/, and read them back
"""
