"""Measures of what a generator produced: memorisation (Def. 2.1, eq 8, App. D.4), KL and W1 (Fig. 5,
App. C.2), densities and their self-checks (Sec. 3.1), the Frechet distance (App. D.1) and the
endpoint sensitivity of Sec. 4.1.

May evaluate a model (:mod:`support.models`) but never imports an experiment.
"""
