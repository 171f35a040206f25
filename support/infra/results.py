"""Where runs write their outputs: results JSON, tables and checkpoints, all under the build folder.

Every profile builds into ``_build/<profile>`` (the Makefile's ``make book``); the experiment
chapters write their headline numbers to ``_build/<profile>/results/<name>.json`` and long jobs
keep checkpoints in ``_build/<profile>/checkpoints``. ``BOOK_BUILD_DIR`` moves ``_build``: every
profile still gets its own folder inside it.

Every write is atomic (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .profiles import Profile
from .provenance import REPO_ROOT, git_commit, results_sources

BUILD_DIR_ENV_VAR = "BOOK_BUILD_DIR"


def build_dir(profile: Profile) -> Path:
    """``<root>/<profile run name>`` with root ``$BOOK_BUILD_DIR`` if set, else ``<repo>/_build`` (where
    ``make book`` builds).

    The run name is the profile's name, with ``-seed<n>`` when ``$BOOK_SEED`` changed the seed, so a
    run under another profile or seed never overwrites this one's results or checkpoints, wherever
    the root is (#21 D1: a shared override folder let a smoke run replace paper checkpoints).
    """
    override = os.environ.get(BUILD_DIR_ENV_VAR, "").strip()
    return (Path(override) if override else REPO_ROOT / "_build") / profile.run_name


def results_dir(profile: Profile) -> Path:
    path = build_dir(profile) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir(profile: Profile) -> Path:
    path = build_dir(profile) / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that leaves either the old file or the complete new one, never a partial one."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used: damaged, truncated, or not this book's checkpoint."""


def load_checkpoint(path: str | Path | None, fingerprint: str | None, inputs: str,
                    map_location: torch.device | str | None = None, required: Sequence[str] = ()) -> dict | None:
    """The checkpoint at ``path`` if it was written for these inputs (same ``fingerprint``), else None.

    A missing file gives None; a file for other inputs (``inputs`` names what the fingerprint
    covers) gives None with a warning, and the caller starts afresh and overwrites it. Only
    tensors and plain containers are unpickled (``weights_only``). An unreadable file (empty,
    truncated, garbage, an unsafe pickle) or one without the ``required`` entries raises
    :class:`CheckpointError` naming the file and the fix, and is left in place for inspection.
    """
    if path is None or not Path(path).exists():
        return None
    fix = f"delete {path} (or move it away) to start afresh"
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch.load raises EOFError, UnpicklingError, RuntimeError, ... by cause
        cause = str(error).split("\n")[0][:200]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {cause}): it is damaged, "
                              f"truncated or not a checkpoint of this book; {fix}") from None
    missing = [key for key in ("fingerprint", *required) if key not in saved] if isinstance(saved, dict) else None
    if missing is None or missing:
        what = f"a {type(saved).__name__}" if missing is None else f"a checkpoint without {', '.join(missing)}"
        raise CheckpointError(f"checkpoint {path} is {what}, not one this code writes; {fix}")
    if saved.get("fingerprint") != fingerprint:
        warnings.warn(f"checkpoint {path} belongs to another run: it was written for other inputs ({inputs}); "
                      "starting afresh and overwriting it", stacklevel=3)
        return None
    return saved


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def run_metadata(profile: Profile, name: str | None = None) -> dict[str, Any]:
    """Provenance stored with every results file: profile, device, date, commit, versions and, for the
    results ``name`` of a chapter, the hashes of the sources its numbers depend on
    (:func:`support.infra.provenance.results_sources`).

    The device names the GPU, or the CPU model and the instruction set torch's kernels use: with the
    thread count fixed a run repeats bit for bit on one machine, but float32 kernels round differently
    on another CPU, and a long training run (chapter 13's DDPM) amplifies that into other weights."""
    import platform  # here, not at the top: this function is record keeping and is not hashed

    device = str(profile.device)
    if profile.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(profile.device)})"
    else:
        cpuinfo = Path("/proc/cpuinfo")
        models = ([line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                   if line.startswith("model name")] if cpuinfo.exists() else [])
        device += f" ({models[0] if models else platform.processor() or platform.machine()}, " \
                  f"{torch.backends.cpu.get_cpu_capability()})"
    return {
        "profile": profile.name,
        "device": device,
        "dtype": str(profile.dtype),
        "seed": profile.seed,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        **({"sources": sources} if (sources := results_sources(name, profile=profile.name)) is not None else {}),
    }


def _non_finite_entries(value: Any, where: str = "results") -> list[str]:
    """Paths of the NaN and infinite floats inside nested dicts, lists and tuples."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where} = {value}"]
    if isinstance(value, Mapping):
        return [bad for key, item in value.items() for bad in _non_finite_entries(item, f"{where}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [bad for i, item in enumerate(value) for bad in _non_finite_entries(item, f"{where}[{i}]")]
    return []


def write_results(name: str, results: Mapping[str, Any], profile: Profile) -> Path:
    """Write ``{"metadata": ..., "results": results}`` to ``results/<name>.json``; returns the path.

    JSON has no NaN or infinity (``json.dumps`` would write a bare ``NaN`` that other readers reject),
    so a non-finite number raises, naming where it is; store None for a value that does not exist.
    """
    path = results_dir(profile) / f"{name}.json"
    payload = {"metadata": run_metadata(profile, name), "results": results}
    try:
        text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        bad = _non_finite_entries(dict(results))
        raise ValueError(f"results {name!r} hold non-finite numbers, which JSON cannot store: {'; '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}; store None where a value does not exist") from None
    atomic_write_text(text + "\n", path)
    return path


def save_figure(fig: Any, name: str, figure: str, profile: Profile) -> Path:
    """Save a matplotlib ``fig`` as ``results/<name>/<figure>.png`` (atomically); returns the path.

    These PNGs are what ``python -m support.infra.paper_artefacts <name>`` commits from a paper-profile run.
    """
    path = results_dir(profile) / name / f"{figure}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def read_matching_results(name: str, profile: Profile) -> dict[str, Any] | None:
    """The results of ``results/<name>.json`` if that run used this profile, device, dtype, seed,
    torch and commit (so its numbers must be reproducible here), else None (missing or another run)."""
    path = results_dir(profile) / f"{name}.json"
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    now = run_metadata(profile)
    keys = ("profile", "device", "dtype", "seed", "commit", "torch")
    if now["commit"] == "unknown" or any(payload["metadata"].get(key) != now[key] for key in keys):
        return None
    return payload["results"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub/MyST markdown table (for ``IPython.display.Markdown`` and the results folder)."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError("every row must have one entry per header column")
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
