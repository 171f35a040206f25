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
"""
