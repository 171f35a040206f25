"""Data: the Gaussian-mixture targets of the toy experiments and the image sets of App. D.

Independent of :mod:`support.core`; imports only :mod:`support.infra` (atomic writes).
"""
