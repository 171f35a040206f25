"""The paper's method on any twice-differentiable loss of a flat parameter vector.

Monge metric and geodesic acceleration (eq 16-19), Christoffel symbols (Def. A.1, eq 14), the
batched exponential map (Sec. 2.2.1, App. B.3, D.3.1), Lanczos with full re-orthogonalisation and
the Laplace approximations built on it (Alg. 1-2, App. D.2). Knows nothing of flows, images or
data; imports only :mod:`support.infra` (atomic checkpoints).
"""
