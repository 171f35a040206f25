"""The book's experiments, composed from every layer below: closed-form toy losses, the memorising
1D and 2D flows and their Laplace ensembles (Sec. 5.1, App. C), and Algorithm 2's stages on images
(Sec. 5.2, App. D). The top layer: nothing in ``support`` imports it.
"""
