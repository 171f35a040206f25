"""One result per profile and seed, whatever the thread count the process started with (issue: trustworthy numbers).

A toy pipeline (100 Adam steps of the memorising 1D flow, then a numpy matrix product and
``eigvalsh``) runs in two fresh interpreters that start with 1 and with 2 OpenMP/BLAS threads, as
pytest-xdist and ``make book`` do. Run bare, the two give different bits (the control: the
pipeline is sensitive to the thread count); after :func:`start_run` they give the same bits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from support.infra.profiles import get_profile
from support.infra.reproducibility import fix_thread_count, start_run

PIPELINE = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import torch
    from support.data.toy_data import gmm_1d
    from support.experiments.memorising_flow import train_memorising_flow
    from support.infra.profiles import get_profile
    from support.infra.reproducibility import seed_everything, start_run

    def digest(generator):
        target = gmm_1d(torch.float64)
        problem = train_memorising_flow(target, target.means, 2000, (32, 32), 100, 3e-3, generator, progress=False)
        theta = torch.cat([p.detach().flatten() for p in problem.model.parameters()]).numpy()
        a = np.random.default_rng(0).standard_normal((400, 400))
        spd = a @ a.T
        return hashlib.sha256(theta.tobytes() + spd.tobytes() + np.linalg.eigvalsh(spd).tobytes()).hexdigest()

    profile = get_profile("smoke")
    bare = digest(seed_everything(profile.seed))
    fixed = digest(start_run(profile))
    print(bare, fixed, torch.get_num_threads())
""")


def run_pipeline(threads: int) -> tuple[str, str, int]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    env.pop("BOOK_SEED", None)
    out = subprocess.run([sys.executable, "-c", PIPELINE], env=env, capture_output=True, text=True, check=True,
                         timeout=300)
    bare, fixed, threads_after = out.stdout.split()
    return bare, fixed, int(threads_after)


def test_same_bits_whatever_the_starting_thread_count() -> None:
    (bare_1, fixed_1, after_1), (bare_2, fixed_2, after_2) = run_pipeline(1), run_pipeline(2)
    profile = get_profile("smoke")
    assert after_1 == after_2 == profile.intra_op_threads
    assert fixed_1 == fixed_2
    if bare_1 == bare_2:
        pytest.skip("on this machine 1 and 2 threads give the same bits even unfixed: the check shows nothing here")
    assert fixed_1 == bare_1  # the smoke profile's one thread is the single-threaded result


def test_fix_thread_count_sets_torch_and_blas_pools() -> None:
    before = torch.get_num_threads()
    try:
        fix_thread_count(1)
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        fix_thread_count(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_fix_thread_count_rejects_non_positive_integers(threads) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        fix_thread_count(threads)


def test_start_run_returns_the_profiles_seeded_generator() -> None:
    profile = get_profile("smoke")
    before = torch.get_num_threads()
    try:
        first = torch.rand(3, generator=start_run(profile))
        again = torch.rand(3, generator=start_run(profile))
    finally:
        fix_thread_count(before)
    assert torch.equal(first, again)
    assert torch.equal(first, torch.rand(3, generator=torch.Generator().manual_seed(profile.seed)))


def test_every_chapter_fixes_threads_and_seed_before_its_first_draw() -> None:
    chapters = sorted((Path(__file__).resolve().parents[1] / "book").glob("[0-9][0-9]_*.md"))
    assert chapters
    for chapter in chapters:
        text = chapter.read_text(encoding="utf-8")
        first_code = text.index("```{code-cell}")
        start = text.find("start_run(profile)", first_code)
        assert start > 0, f"{chapter.name} does not call start_run(profile)"
        for draw in ("torch.randn(", "torch.rand(", "np.random.", ".sample("):
            position = text.find(draw, first_code)
            assert position == -1 or position > start, f"{chapter.name} draws ({draw}) before start_run"
