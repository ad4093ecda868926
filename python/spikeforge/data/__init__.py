"""Datasets that ship with the package (no downloads), and in-memory arrays as a second source.

digits.npz is scikit-learn's ``load_digits`` data, stored here so that neither a download nor scikit-learn
is needed: the 1797 8x8 images of the test set of the UCI "Optical Recognition of Handwritten Digits" data
set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), pixels 0..16 as uint8 ("data", [1797, 64], row-major 8x8)
and the class 0..9 ("target", [1797]), in scikit-learn's order. Extracted once from scikit-learn 1.9.1's
sklearn/datasets/data/digits.csv.gz (exact integer values; 45 KB compressed).
"""

from __future__ import annotations

import zipfile
from importlib import resources
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["load_digits", "digits", "from_arrays", "load_npz", "DATASETS", "get_dataset", "resize_images"]


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """The raw digits data: (data uint8 [1797, 64] in 0..16, target uint8 [1797] in 0..9)."""
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f:
        z = np.load(f)
        return z["data"].copy(), z["target"].copy()


def _split(n: int, test_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    return perm[n_test:], perm[:n_test]


def _as_tensor(a, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":  # strings, objects, dates: torch.from_numpy's TypeError named nothing
            raise ValueError(f"{name} must hold numbers, got an array of dtype {a.dtype}")
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(a)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    return t


MAX_CLASSES = 1 << 20


def _labels(a, name: str) -> torch.Tensor:
    """Class indices as int64 [N]: integers >= 0 (integral floats are accepted, 2.5 is not)."""
    t = _as_tensor(a, name)
    if t.dim() != 1:  # (flattening a [N, 2] y reported "x has N samples but y has 2N")
        raise ValueError(f"{name} must be a 1-D array of class indices [N], got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != t.trunc())
        if bool(bad.any()):
            raise ValueError(f"{name} must hold integer class indices, got {float(t[bad][0])!r} (dtype {t.dtype})")
    if bool((t < 0).any()):
        raise ValueError(f"{name} must hold class indices >= 0, got {int(t.min())}")
    t = t.long()  # (before comparing with MAX_CLASSES: a uint8 array would wrap it)
    if bool((t >= MAX_CLASSES).any()):  # the classifier gets max + 1 outputs: 1e9 asked for a 128 GB head
        raise ValueError(f"{name} must hold class indices < {MAX_CLASSES}, got {int(t.max())}")
    return t


def from_arrays(
    x, y, x_test=None, y_test=None, *, test_fraction: float = 0.2, split_seed: int = 0, scale: Optional[float] = None
) -> Tuple[TensorDataset, TensorDataset]:
    """(train, test) TensorDatasets from tensors or numpy arrays.

    x: [N, C, H, W] images (or [N, T, C, H, W] sequences, which the trainer moves to time-first), y: [N]
    class indices (integers >= 0; a float array is accepted when every value is integral). Without
    x_test/y_test a fixed random split (split_seed) holds out test_fraction.
    Inputs are converted to float32 and divided by ``scale`` when given.
    """
    x, y = _as_tensor(x, "x"), _labels(y, "y")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be images [N, C, H, W] or sequences [N, T, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    x = x.float() / scale if scale else x.float()
    if (x_test is None) != (y_test is None):
        raise ValueError("y_test given without x_test" if x_test is None else "x_test given without y_test")
    if x_test is None:
        if x.shape[0] < 2:
            raise ValueError(
                f"x has {x.shape[0]} sample: a train / test split needs at least 2 (or give x_test, y_test)"
            )
        tr, te = _split(x.shape[0], test_fraction, split_seed)
        return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te])
    xt, yt = _as_tensor(x_test, "x_test"), _labels(y_test, "y_test")
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"x_test has {xt.shape[0]} samples but y_test has {yt.shape[0]}")
    xt = xt.float() / scale if scale else xt.float()
    if xt.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_test samples have shape {tuple(xt.shape[1:])}, x samples {tuple(x.shape[1:])}")
    return TensorDataset(x, y), TensorDataset(xt, yt)


def digits(test_fraction: float = 0.2, split_seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """The 8x8 digits as ([N, 1, 8, 8] float32 in [0, 1], label) train/test sets (fixed 80/20 split)."""
    data, target = load_digits()
    return from_arrays(
        data.reshape(-1, 1, 8, 8), target, test_fraction=test_fraction, split_seed=split_seed, scale=16.0
    )


def load_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """Arrays from an .npz file: keys x, y (and optionally x_test, y_test); uint8 images are scaled by 1/255.
    A file that is not such an archive, or arrays that do not fit, is a ValueError naming the file."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:  # empty, truncated, text, pickled
        raise ValueError(f"{path}: not a readable .npz archive of arrays ({type(e).__name__})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # an .npy renamed: one bare array
        raise ValueError(f"{path}: holds one array (.npy data), not an .npz archive with arrays 'x' and 'y'")
    try:
        with z:
            missing = {"x", "y"} - set(z.files)
            if missing:
                raise ValueError(f"needs arrays 'x' and 'y' (optionally 'x_test', 'y_test'); has {z.files}")
            arrs = {k: z[k] for k in ("x", "y", "x_test", "y_test") if k in z.files}
        scale = 255.0 if arrs["x"].dtype == np.uint8 else None
        return from_arrays(
            arrs["x"],
            arrs["y"],
            arrs.get("x_test"),
            arrs.get("y_test"),
            test_fraction=test_fraction,
            split_seed=split_seed,
            scale=scale,
        )
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # (object arrays: allow_pickle's ValueError)
        raise ValueError(f"{path}: {e}") from None


DATASETS = {"digits": digits}


def get_dataset(name: str, **kw) -> Tuple[TensorDataset, TensorDataset]:
    """A shipped dataset by name, or an .npz path (arrays x, y[, x_test, y_test])."""
    if name in DATASETS:
        return DATASETS[name](**kw)
    if name.endswith(".npz"):
        return load_npz(name, **kw)
    raise ValueError(f"unknown dataset {name!r}: one of {sorted(DATASETS)} or a path to an .npz file")


def resize_images(dataset: TensorDataset, size: int) -> TensorDataset:
    """The dataset with its images [N, C, H, W] (or sequences [N, T, C, H, W]) resized to size x size by
    bilinear interpolation (align_corners=False; values stay in the input's range), labels unchanged: e.g.
    the 8x8 digits at 32x32 for the CIFAR-sized models, whose patch splitting pools by 4."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        raise TypeError("resize_images expects a TensorDataset of (images, labels)")
    x, y = dataset.tensors
    if x.dim() not in (4, 5):
        raise ValueError(
            f"resize_images expects images [N, C, H, W] or sequences [N, T, C, H, W], got {tuple(x.shape)}"
        )
    if tuple(x.shape[-2:]) == (size, size):
        return dataset
    flat = x.float().flatten(0, 1) if x.dim() == 5 else x.float()
    out = torch.nn.functional.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    if x.dim() == 5:
        out = out.view(x.shape[0], x.shape[1], *out.shape[1:])
    return TensorDataset(out, y)
