"""The book's own infrastructure: run profiles, seeding, figure style, results, checkpoints and artefacts.

The bottom layer: imports nothing else from ``support``.
"""
