"""Generative models: flow matching (Sec. 2.1.1), DDIM as its eq (6) flow, the ddpm-cifar10-32 U-Net and
its training, posterior ensembles of generators, training-free baselines and the exact likelihood (Sec. 3.1).

Builds on :mod:`support.core` (flat parameters, summed losses) and :mod:`support.infra`.
"""
