"""Event-driven spike propagation: spike_linear, spike_conv2d, pack_spikes / unpack_spikes over
csrc/core/spike.h (docs/spike_propagation.md).

Forward: the input S is bit-packed once (one pass that also counts the non-zeros and classifies the
values: binary 0/1, small integer counts 0..255, ternary -1/0/1, or other floats). Below a per-device
firing-rate threshold the native event-driven kernels run (only active inputs add (or, for -1, subtract)
their weights); above it, or for non-spike floats, the dense torch op runs. Either way the answer is exact
for any input, NaN and inf included (docs/bad_inputs.md).

Saved for backward: binary input -> the packed bits (1 bit per element); ternary -> the packed bits and
their sign bits (2 bits); counts -> uint8 (8 bits); other floats -> the input itself. Backward: grad_weight
accumulated over the active inputs (native, from the packed bits) or as a dense GEMM / conv above the
threshold; grad_input dense (dY W, a transposed
conv), or, with grad_mask (the sparse-gradient idea of Perez-Nieves & Goodman 2021), only where the mask
is set: for linear a native kernel computes just those entries; for conv2d the transposed conv is masked
after the fact (same values, no saving); grad_bias a sum.

Host synchronisation: deciding the path and the saved format reads two numbers computed on the
device (non-zeros, kind). On CPU that is free. On CUDA it is one synchronisation per call, so for CUDA
graphs fix both: mode="sparse" or "dense" and input_kind="binary" / "counts" / "ternary" / "float" (a device-side
assertion then checks the promised kind without a sync). nn.SpikeLinear / SpikeConv2d measure on their
first call and cache the decision (module.replan() measures again).

Both layers are one fused op (torch.ops.spikeforge.spike_fwd / spike_bwd) built by ops/_common.FusedOp like
every family: the eager fast path, the custom ops for torch.compile and opcheck, the higher-order-autograd
rules; the reference (dense torch) runs without native kernels and for float16 / bfloat16 (the native
kernels take float32, and float64 on CPU).
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import torch.nn.grad  # conv2d_input: torch.nn does not import it itself
from torch import Tensor

from .. import reference
from .._native import native
from ._common import FusedOp, _has_native, _stream, _tracing, autocast_on

__all__ = [
    "spike_linear",
    "spike_conv2d",
    "pack_spikes",
    "unpack_spikes",
    "PackedSpikes",
    "CROSSOVER",
    "TUNED",
    "load_tuned_crossover",
]

KIND_AUTO, KIND_BINARY, KIND_COUNTS, KIND_FLOAT, KIND_TERNARY = -1, 0, 1, 2, 3
_KINDS = {"auto": KIND_AUTO, "binary": KIND_BINARY, "counts": KIND_COUNTS, "ternary": KIND_TERNARY, "float": KIND_FLOAT}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
# Value classes of csrc/core/spike.h, OR-ed over the elements into info[1] by the pack kernel (0: only 0 and 1)
CLASS_COUNTS, CLASS_NEG_ONE, CLASS_OTHER = 1, 2, 4
_KIND_CLASSES = {KIND_BINARY: 0, KIND_COUNTS: CLASS_COUNTS, KIND_TERNARY: CLASS_NEG_ONE}  # what a kind admits


def _kind_of(classes: int) -> int:
    """The kind of a tensor whose values fall into `classes` (e.g. -1 and 2 together: float)."""
    return {0: KIND_BINARY, CLASS_COUNTS: KIND_COUNTS, CLASS_NEG_ONE: KIND_TERNARY}.get(classes, KIND_FLOAT)


def _describe(classes: int) -> str:
    parts = [
        text
        for bit, text in (
            (CLASS_COUNTS, "counts > 1"),
            (CLASS_NEG_ONE, "-1 values"),
            (CLASS_OTHER, "other values (fractions, negatives, > 255, inf or NaN)"),
        )
        if classes & bit
    ]
    return " and ".join(parts)


MODE_AUTO, MODE_SPARSE, MODE_DENSE = 0, 1, 2
_MODES = {"auto": MODE_AUTO, "sparse": MODE_SPARSE, "dense": MODE_DENSE}

# Firing rate (fraction of non-zero inputs) at or below which the event-driven kernels beat the dense
# torch op, per device and layer: the crossover measured by `spikeforge bench spikes` (linear
# 4096->4096 and conv 3x3 64->64 at 32x32, batch*T = 256; bench/results/<device>_spikes.json) and, for
# conv, a sweep over the geometries of a ResNet (bench/results/cpu_conv_crossover.json). "linear" /
# "conv2d" are the forward+backward crossovers (used when a gradient is needed), "*_fwd" the forward-only
# ones (inference). For conv2d the dense convolution's efficiency depends on the output map: it is high on
# large maps and poor on small ones with many channels, so CONV_CROSSOVER_SMALL_MAPS raises the f+b
# crossover for output maps of at most that many pixels. Pointwise convs ("conv2d_1x1": one tap per event,
# little work saved per event) and convs whose stride exceeds the kernel (the event kernels visit every
# active input, also those the strided kernel never reads) take the dense op. None: not measured to win on
# that device, so "auto" takes the dense op there; mode="sparse" still runs the event-driven kernels.
CROSSOVER: dict[str, dict[str, Optional[float]]] = {
    # CPU: the lower of two machines' crossovers, so that "auto" takes the slower path on neither; `spikeforge
    # bench spikes` prints the values that hold on the machine it runs on, to set here for that machine.
    # 2 EPYC cores. linear: won up to 30% in two sweeps (cpu_spikes.json, cpu_spikes_run2.json, load 2-9).
    # conv 3x3 f+b on 32x32 and 16x16 maps with 64 channels, batch*T = 32 (cpu_conv_crossover.json): 1.01x
    # and 1.37x at 10%, 0.60x and 1.34x at 15%; forward only 10% (cpu_spikes*.json: the runs disagreed
    # between 10% and 20%). 1x1: at most 1.14x (5%), 1.08x at 10%, losing from 15%: the dense GEMM.
    # 2 Intel Xeon (AVX-512) cores, 2026-12-06, where MKL's GEMMs and convolutions are faster: linear 1.19x /
    # 1.29x (f+b / forward) at 20%, 0.95x / 0.93x at 30%; conv 3x3 64 -> 64 on 32x32 maps at batch*T = 256 1.18x
    # / 1.12x at 5%, 0.93x / 0.82x at 10% (cpu_spikes_xeon.json); at batch*T = 32 1.13x at 10%, 0.79x at 15%
    # (cpu_conv_crossover_xeon.json).
    "cpu": {
        "linear": 0.20,
        "conv2d": 0.05,
        "linear_fwd": 0.20,
        "conv2d_fwd": 0.05,
        "conv2d_1x1": None,
        "conv2d_1x1_fwd": None,
    },
    # H100 (cuda_h100_spikes.json): linear forward won up to 2% (1.25x at 1%), f+b never; the conv kernels
    # measured there (70x slower than cuDNN) have since been rewritten (masks + compacted lists, not yet
    # run on a GPU): unset until `spikeforge bench spikes --device cuda` measures them.
    "cuda": {
        "linear": None,
        "conv2d": None,
        "linear_fwd": None,
        "conv2d_fwd": None,
        "conv2d_1x1": None,
        "conv2d_1x1_fwd": None,
    },
}

# (largest output map in pixels, f+b crossover) for small maps, smallest first; CPU: the lower of the two
# machines', 3x3 f+b, batch*T = 32. EPYC (cpu_conv_crossover.json): 8x8 maps (128 channels) 1.12x at 20%,
# 1.00x at 25%; 4x4 (256) 1.07x at 30%, 1.11x at 40%; 2x2 (512, and 256 -> 512 at stride 2) >= 1.5x up to 40%.
# Intel Xeon (cpu_conv_crossover_xeon.json): 16x16 (64) 1.03x at 10%, 0.82x at 15%; 8x8 1.10x at 10%, 0.91x at
# 15%; 4x4 1.02x at 20%, 0.93x at 25%; 2x2 >= 1.7x up to 40%.
CONV_CROSSOVER_SMALL_MAPS: dict[str, tuple[tuple[int, float], ...]] = {
    "cpu": ((4, 0.40), (16, 0.20), (256, 0.10)),
    "cuda": (),
}

# Mask density (fraction of set entries) up to which the masked grad_input kernel of spike_linear beats
# the dense GEMM dY W followed by the mask. CPU: 2 EPYC cores, [256, 4096] x [4096, 4096], load 2.6:
# 6.5x at 1%, 3.1x at 5%, 1.08x at 20%. CUDA (None): the masked kernel always (no host read of the mask's
# density, so the backward stays capturable); not measured.
MASKED_CROSSOVER: dict[str, Optional[float]] = {"cpu": 0.2, "cuda": None}


# --------------------------------------------------------------------------------------------
# per-machine crossovers (`spikeforge tune`)
# --------------------------------------------------------------------------------------------
# The defaults above are the lower of two machines' crossovers. `spikeforge tune` measures this machine's
# and keeps them in a cache file, one entry per machine (a home directory shared by different machines
# holds an entry for each); importing this module applies the entry of the machine it runs on over
# CROSSOVER["cpu"], so "auto" picks the faster path here (at any thread count: tune again for another). Set
# CROSSOVER after the import to override both; SPIKEFORGE_TUNED=0 ignores the file. TUNED says what was
# applied ({} when nothing). A file that cannot be used is reported by a warning at the first auto decision.
TUNED_KEYS = ("linear", "linear_fwd", "conv2d", "conv2d_fwd")
TUNED: dict[str, Any] = {}
CROSSOVER_DEFAULTS = {device: dict(table) for device, table in CROSSOVER.items()}  # as shipped
_TUNED_FORMAT = 1
_TUNED_MAX_BYTES = 1 << 20  # one entry is about 3 KB


def tuned_cache_path() -> str:
    """The cache file of `spikeforge tune`: $SPIKEFORGE_CACHE_DIR, else $XDG_CACHE_HOME/spikeforge, else
    ~/.cache/spikeforge; crossover.json there."""
    d = os.environ.get("SPIKEFORGE_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "spikeforge")
    return os.path.join(d, "crossover.json")


def machine_key() -> str:
    """What a tuned entry is valid for: the CPU model, its logical CPU count, and the path the native CPU
    kernels take (a portable build's instruction-set variant), e.g. "Intel(R) Xeon(R) Processor | 2 CPUs | ..."."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    path = native.cpu_kernel_path() if native is not None and hasattr(native, "cpu_kernel_path") else "no native module"
    return f"{model} | {os.cpu_count()} CPUs | {path}"


def _check_tuned_values(values: Any) -> dict[str, Optional[float]]:
    """A tuned entry's crossovers: each of TUNED_KEYS a rate in (0, 1] or None (the dense op always)."""
    if not isinstance(values, dict) or set(values) != set(TUNED_KEYS):
        raise ValueError(f"the crossovers must give exactly {', '.join(TUNED_KEYS)}")
    for k, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0):
            raise ValueError(f"crossover {k} must be a firing rate in (0, 1] or null, got {v!r}")
    return {k: None if values[k] is None else float(values[k]) for k in TUNED_KEYS}


def read_tuned_file(path: str) -> dict[str, Any]:
    """The cache file's content ({"format": 1, "machines": {key: entry}}); an empty one when there is none.
    ValueError names what is wrong with a file that is there."""
    if not os.path.lexists(path):
        return {"format": _TUNED_FORMAT, "machines": {}}
    try:
        if not os.path.isfile(path):
            raise ValueError("it is not a regular file")
        if os.path.getsize(path) > _TUNED_MAX_BYTES:
            raise ValueError(f"it is larger than {_TUNED_MAX_BYTES} bytes")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSON errors are ValueErrors
        raise ValueError(f"cannot read {path}: {e}") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if type(fmt) is not int or fmt != _TUNED_FORMAT or not isinstance(data.get("machines"), dict):
        raise ValueError(f"{path} is not a spikeforge crossover file (format {_TUNED_FORMAT})")
    return data


def tuned_disabled() -> bool:
    """SPIKEFORGE_TUNED=0 (or false / no / off): the cache file is ignored."""
    return os.environ.get("SPIKEFORGE_TUNED", "").strip().lower() in ("0", "false", "no", "off")


_TUNED_PROBLEM: Optional[str] = None  # why the file found at import was not applied, warned at first use


def load_tuned_crossover(path: Optional[str] = None, warn: bool = True) -> Optional[dict[str, Optional[float]]]:
    """Applies this machine's entry of the tuned-crossover file (default tuned_cache_path()) over
    CROSSOVER["cpu"] and returns its crossovers; None when there is no entry for this machine, when
    SPIKEFORGE_TUNED=0, or when the file cannot be used: a warning then says why (warn=False, as at import:
    the first auto decision on CPU warns instead, so that importing spikeforge never prints), and the
    defaults stay."""
    global _TUNED_PROBLEM
    if tuned_disabled():
        return None
    path = path or tuned_cache_path()
    if not os.path.lexists(path):
        return None
    try:
        entry = read_tuned_file(path)["machines"].get(machine_key())
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise ValueError("an entry must be an object")
        values = _check_tuned_values(entry.get("crossover"))
    except ValueError as e:
        problem = f"spikeforge: ignoring the tuned crossovers ({e}); the defaults apply"
        if warn:
            warnings.warn(problem, stacklevel=2)
        else:
            _TUNED_PROBLEM = problem
        return None
    _TUNED_PROBLEM = None
    CROSSOVER["cpu"].update(values)
    TUNED.clear()
    TUNED.update({"path": path, "machine": machine_key(), "measured": entry.get("measured"), "crossover": values})
    return values


load_tuned_crossover(warn=False)


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------
def _words(K: int) -> int:
    return (K + 63) // 64


def _pack_impl(s2d: Tensor, signs: bool = False) -> tuple[Tensor, Tensor]:
    """-> (bits [R, words], or [2R, words] with the sign words (bit set where s < 0) in rows R.., info). s2d may be
    non-contiguous (a transposed grad_mask): the native pack reads a contiguous copy."""
    s2d = s2d.contiguous()
    R, K = s2d.shape
    bits = torch.empty(2 * R if signs else R, _words(K), dtype=torch.int64, device=s2d.device)
    info = torch.empty(2, dtype=torch.int64, device=s2d.device)
    native.spike_pack(s2d, bits[:R], info, torch.get_num_threads(), _stream(s2d), bits[R:] if signs else None)
    return bits, info


def _unpack_impl(bits: Tensor, K: int, dtype: torch.dtype, signs: Optional[Tensor] = None) -> Tensor:
    """bits [R, words] (and their sign words) -> [R, K] of 0 / 1 (0 / 1 / -1)."""
    out = torch.empty(bits.shape[0], K, dtype=dtype, device=bits.device)
    native.spike_unpack(bits, out, torch.get_num_threads(), _stream(bits), signs)
    return out


def _ternary_planes(bits: Tensor) -> tuple[Tensor, Tensor]:
    """The saved form of ternary input, [2R, words] -> (event words, sign words), [R, words] each."""
    R = bits.shape[0] // 2
    return bits[:R], bits[R:]


@torch.library.custom_op("spikeforge::spike_pack", mutates_args=())
def spike_pack(s: Tensor) -> tuple[Tensor, Tensor]:
    """s [R, K] (float32/float64) -> (bits [R, ceil(K/64)] int64, info [2] int64 = (non-zeros, value classes:
    0 for 0/1 only, else an OR of CLASS_COUNTS, CLASS_NEG_ONE, CLASS_OTHER))."""
    return _pack_impl(s)


@spike_pack.register_fake
def _(s):
    return s.new_empty((s.shape[0], _words(s.shape[1])), dtype=torch.int64), s.new_empty(2, dtype=torch.int64)


@torch.library.custom_op("spikeforge::spike_unpack", mutates_args=())
def spike_unpack(bits: Tensor, K: int, dtype: torch.dtype) -> Tensor:
    """bits [R, words] -> [R, K] of 0 / 1."""
    return _unpack_impl(bits.contiguous(), K, dtype)


@spike_unpack.register_fake
def _(bits, K, dtype):
    return bits.new_empty((bits.shape[0], K), dtype=dtype)


class PackedSpikes(NamedTuple):
    """A binary spike tensor at 1 bit per element: bits [prod(shape[:-1]), ceil(shape[-1] / 64)] int64
    (little-endian within a word, padding bits zero), plus the dense shape and dtype."""

    bits: Tensor
    shape: tuple
    dtype: torch.dtype

    def nbytes(self) -> int:
        return self.bits.numel() * self.bits.element_size()


def pack_spikes(s: Tensor) -> PackedSpikes:
    """Bit-pack a binary spike tensor [..., K]. Raises ValueError if s holds anything but 0 and 1
    (checked on the host: one synchronisation on CUDA)."""
    _check_s(s, "s", 1)
    shape, dtype = tuple(s.shape), s.dtype
    K = shape[-1]
    s2d = s.reshape(math.prod(shape[:-1]), K)  # (not -1: a last dimension of 0 leaves it undetermined)
    if s2d.numel() == 0:  # nothing to pack (and no value to check)
        return PackedSpikes(torch.zeros(s2d.shape[0], _words(K), dtype=torch.int64, device=s.device), shape, dtype)
    if not _native_ok(s):
        if not bool(((s2d == 0) | (s2d == 1)).all()):
            raise ValueError("pack_spikes: s must hold only 0 and 1")
        return PackedSpikes(reference.pack_bits(s2d), shape, dtype)
    src = s2d if s2d.dtype in (torch.float32, torch.float64) else s2d.float()
    bits, info = spike_pack(src) if _tracing() else _pack_impl(src)
    if not _tracing() and int(info[1]) != KIND_BINARY:
        raise ValueError("pack_spikes: s must hold only 0 and 1")
    return PackedSpikes(bits, shape, dtype)


def unpack_spikes(p: PackedSpikes) -> Tensor:
    """The dense 0/1 tensor of a PackedSpikes."""
    if not isinstance(p, PackedSpikes):
        raise TypeError(f"p must be a PackedSpikes, got {type(p).__name__}")
    K = p.shape[-1] if p.shape else 1
    if (
        p.bits.dtype != torch.int64
        or p.bits.dim() != 2
        or p.bits.shape[1] != _words(K)
        or p.bits.shape[0] != math.prod(p.shape[:-1])
    ):
        raise ValueError(
            f"p.bits has shape {tuple(p.bits.shape)} / dtype {p.bits.dtype}, which does not "
            f"match the packed shape {p.shape}"
        )
    if not _native_ok(p.bits, any_dtype=True):
        return reference.unpack_bits(p.bits, K, p.dtype).reshape(p.shape)
    dt = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
    if p.bits.is_cuda:
        dt = torch.float32
    out = spike_unpack(p.bits, K, dt) if _tracing() else _unpack_impl(p.bits.contiguous(), K, dt)
    return out.to(p.dtype).reshape(p.shape)


# --------------------------------------------------------------------------------------------
# shared plumbing
# --------------------------------------------------------------------------------------------
def _native_ok(t: Tensor, any_dtype: bool = False) -> bool:
    if not _has_native(t.device):
        return False
    if any_dtype:
        return True
    return t.dtype == torch.float32 or (t.dtype == torch.float64 and t.device.type == "cpu")


def _resolve_kind(kind: int, info: Tensor) -> int:
    """The kind to save for backward. KIND_AUTO reads info on the host; a promised kind is checked
    (on CPU with a ValueError, on CUDA by a device-side assertion: no synchronisation)."""
    if kind == KIND_AUTO:
        return _kind_of(int(info[1]))
    if kind != KIND_FLOAT:
        outside = ~_KIND_CLASSES[kind]  # the value classes the promised kind does not admit
        if info.is_cuda:
            torch._assert_async((info[1] & outside) == 0, "spike op: the input does not match input_kind")
        elif int(info[1]) & outside:
            raise ValueError(
                f"s: input_kind={_KIND_NAMES[kind]} was promised but s holds {_describe(int(info[1]) & outside)}"
            )
    return kind


def _crossover(device: torch.device, layer: str, cp: Optional[list[int]]) -> Optional[float]:
    """The firing-rate crossover of a call (layer is "linear" / "conv2d", + "_fwd" for inference), or None
    when the dense op always wins there (see CROSSOVER)."""
    global _TUNED_PROBLEM
    if _TUNED_PROBLEM is not None and device.type == "cpu" and not torch.compiler.is_compiling():
        warnings.warn(_TUNED_PROBLEM, stacklevel=4)
        _TUNED_PROBLEM = None
    table = CROSSOVER.get(device.type, {})
    if cp is None:
        return table.get(layer)
    kh, kw, sh, sw = cp[5], cp[6], cp[9], cp[10]
    if sh > kh or sw > kw:
        return None
    if kh * kw == 1:
        return table.get(layer.replace("conv2d", "conv2d_1x1"))
    rate = table.get(layer)
    if rate is not None and layer == "conv2d":
        pixels = cp[7] * cp[8]
        for max_pixels, small_rate in CONV_CROSSOVER_SMALL_MAPS.get(device.type, ()):
            if pixels <= max_pixels:
                return max(rate, small_rate)
    return rate


def _use_sparse(
    mode: int, kind: int, info: Tensor, numel: int, device: torch.device, layer: str, cp: Optional[list[int]] = None
) -> bool:
    if mode != MODE_AUTO:
        return mode == MODE_SPARSE
    rate = _crossover(device, layer, cp)
    if kind == KIND_FLOAT or numel == 0 or rate is None:
        return False  # non-spike floats: the dense op (the sparse kernels would be exact, just slower)
    return int(info[0]) <= rate * numel


def _saved_values(s2d: Tensor, kind: int) -> Tensor:
    # counts fit in uint8 (kMaxSpikeCount = 255): 8 bits per element instead of the float width
    return s2d.to(torch.uint8) if kind == KIND_COUNTS else s2d


def _values_of(saved: Tensor, dtype: torch.dtype) -> Tensor:
    return saved if saved.dtype == dtype else saved.to(dtype)


# --------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------
def _linear_forward_impl(s2d: Tensor, w: Tensor, b: Optional[Tensor], sparse: bool) -> Tensor:
    M, K = s2d.shape
    N = w.shape[0]
    if not sparse:
        return F.linear(s2d, w, b)
    y = s2d.new_empty(M, N)
    # CUDA workspaces: W transposed, and the flag its transpose sets when W holds an inf or NaN
    wt = s2d.new_empty(K, N) if s2d.is_cuda else None
    nonfinite = s2d.new_empty(1, dtype=torch.int64) if s2d.is_cuda else None
    native.spike_linear_forward(s2d, w, b, y, wt, torch.get_num_threads(), _stream(s2d), nonfinite)
    return y


def _linear_backward_impl(
    grad_y: Tensor,
    bits: Optional[Tensor],
    vals: Optional[Tensor],
    w: Tensor,
    grad_mask: Optional[Tensor],
    sparse: bool,
    need_s: bool,
    need_w: bool,
    need_b: bool,
    signs: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """signs: the sign words of ternary input (with bits), else None."""
    grad_y, w = grad_y.contiguous(), w.contiguous()
    M, N = grad_y.shape
    K = w.shape[1]
    gs: Optional[Tensor] = None
    gw: Optional[Tensor] = None
    gb: Optional[Tensor] = None
    if need_s:
        if grad_mask is None:
            gs = grad_y @ w
        else:
            mask_bits, mask_info = _pack_impl(grad_mask.reshape(M, K).to(grad_y.dtype))
            limit = MASKED_CROSSOVER.get(grad_y.device.type)
            if limit is None or int(mask_info[0]) <= limit * M * K:
                # only the masked entries are computed (work in proportion to the mask)
                gs = grad_y.new_empty(M, K)
                ws = grad_y.new_empty(K, N) if grad_y.is_cuda else None
                nonfinite = grad_y.new_empty(1, dtype=torch.int64) if grad_y.is_cuda else None
                native.spike_linear_grad_input_masked(
                    mask_bits, grad_y, w, gs, ws, torch.get_num_threads(), _stream(grad_y), nonfinite
                )
            else:  # a dense mask: the GEMM is faster
                gs = (grad_y @ w) * grad_mask.reshape(M, K).to(grad_y.dtype)
    if need_w:
        if vals is not None:
            vals = _values_of(vals, grad_y.dtype).reshape(M, K).contiguous()
        if sparse:
            gw = grad_y.new_empty(N, K)
            ws = grad_y.new_empty(K, N) if grad_y.is_cuda else None
            native.spike_linear_grad_weight(bits, vals, grad_y, gw, ws, torch.get_num_threads(), _stream(grad_y), signs)
        elif vals is not None:
            gw = grad_y.t() @ vals
        else:
            assert bits is not None  # _split_saved keeps exactly one of bits / vals
            gw = grad_y.t() @ _unpack_impl(bits, K, grad_y.dtype, signs)
    if need_b:
        gb = grad_y.sum(0)
    # each gradient is computed exactly when its need_* flag is set (else None: an empty in its place)
    e = grad_y.new_empty  # distinct empties: custom-op outputs must not alias each other
    return (gs if gs is not None else e(0), gw if gw is not None else e(0), gb if gb is not None else e(0))


# --------------------------------------------------------------------------------------------
# conv2d (params: the 16 integers of csrc/core/spike.h SpikeConvParams, see _conv_params)
# --------------------------------------------------------------------------------------------
def _conv_params(s: Tensor, w: Tensor, stride, padding, dilation, groups: int) -> list[int]:
    B, Cin, H, W = s.shape
    Cout, _, kh, kw = w.shape
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return [
        B,
        Cin,
        H,
        W,
        Cout,
        kh,
        kw,
        Ho,
        Wo,
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        groups,
    ]


def _conv_geometry(cp):
    return (cp[9], cp[10]), (cp[11], cp[12]), (cp[13], cp[14]), cp[15]


def _conv_forward_impl(s: Tensor, w: Tensor, b: Optional[Tensor], cp: list[int], sparse: bool) -> Tensor:
    if not sparse:
        return F.conv2d(s, w, b, *_conv_geometry(cp))
    B, Cin, H, W, Cout, kh, kw = cp[:7]
    y = s.new_empty((B, Cout, cp[7], cp[8]))
    # CUDA workspaces (csrc/core/spike.h): W transposed, and each input pixel's active channels as bits
    wt = s.new_empty((Cin // cp[15] * kh * kw, Cout)) if s.is_cuda else None
    masks = s.new_empty((B, H, W, _words(Cin)), dtype=torch.int64) if s.is_cuda else None
    native.spike_conv2d_forward(s, w, b, y, wt, masks, cp, torch.get_num_threads(), _stream(s))
    return y


def _conv_backward_impl(
    grad_y: Tensor,
    bits: Optional[Tensor],
    vals: Optional[Tensor],
    w: Tensor,
    grad_mask: Optional[Tensor],
    cp: list[int],
    sparse: bool,
    need_s: bool,
    need_w: bool,
    need_b: bool,
    signs: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """signs: the sign words of ternary input (with bits), else None."""
    grad_y, w = grad_y.contiguous(), w.contiguous()
    B, Cin, H, W = cp[:4]
    stride, padding, dilation, groups = _conv_geometry(cp)
    gs: Optional[Tensor] = None
    gw: Optional[Tensor] = None
    gb: Optional[Tensor] = None
    if vals is not None and need_w:
        vals = _values_of(vals, grad_y.dtype).reshape(B, Cin, H, W).contiguous()
    if not sparse and need_w:
        # dense: one convolution_backward for both gradients (what F.conv2d's backward runs), from the input
        # restored from its compact copy
        if vals is not None:
            dense = vals
        else:
            assert bits is not None  # _split_saved keeps exactly one of bits / vals
            dense = _unpack_impl(bits, Cin * H * W, grad_y.dtype, signs).view(B, Cin, H, W)
        gs, gw, _ = torch.ops.aten.convolution_backward(
            grad_y,
            dense,
            w,
            None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0, 0],
            groups,
            [need_s, True, False],
        )
    elif need_s:
        gs = torch.nn.grad.conv2d_input((B, Cin, H, W), w, grad_y, stride, padding, dilation, groups)
    if gs is not None and grad_mask is not None:
        gs = gs * grad_mask.reshape(gs.shape).to(gs.dtype)
    if sparse and need_w:
        gw = torch.empty_like(w)
        # CUDA workspaces: grad_y channels-last, and one partial grad_w (transposed per group) per sample chunk
        gyt = grad_y.new_empty((B, cp[7], cp[8], cp[4])) if grad_y.is_cuda else None
        ws = (
            grad_y.new_empty((native.spike_conv2d_wgrad_chunks(B), Cin * cp[5] * cp[6], cp[4] // groups))
            if grad_y.is_cuda
            else None
        )
        native.spike_conv2d_grad_weight(
            bits, vals, grad_y, gw, gyt, ws, cp, torch.get_num_threads(), _stream(grad_y), signs
        )
    if need_b:
        gb = grad_y.sum((0, 2, 3))
    # each gradient is computed exactly when its need_* flag is set (else None: an empty in its place)
    e = grad_y.new_empty  # distinct empties: custom-op outputs must not alias each other
    return (gs if gs is not None else e(0), gw if gw is not None else e(0), gb if gb is not None else e(0))


# --------------------------------------------------------------------------------------------
# the two layers behind one forward/backward skeleton
# --------------------------------------------------------------------------------------------
def _rows(s: Tensor) -> Tensor:
    """The [R, K] view that is packed: linear rows, or one row per conv sample."""
    # the row length from the shape, not -1: reshape cannot infer it when there are no rows (batch 0)
    return s if s.dim() == 2 else s.reshape(s.shape[0], math.prod(s.shape[1:]))


def _bwd(layer: str, grad_y, bits, vals, info, w, grad_mask, cp, mode, kind, ns, nw, nb):
    numel = (grad_y.shape[0] * w.shape[1]) if layer == "linear" else cp[0] * cp[1] * cp[2] * cp[3]
    sparse = _use_sparse(mode, kind, info, numel, grad_y.device, layer, cp)
    signs = None
    if kind == KIND_TERNARY:
        bits, signs = _ternary_planes(bits)
    if layer == "linear":
        return _linear_backward_impl(grad_y, bits, vals, w, grad_mask, sparse, ns, nw, nb, signs)
    return _conv_backward_impl(grad_y, bits, vals, w, grad_mask, cp, sparse, ns, nw, nb, signs)


def _split_saved(kind: int, s: Tensor, bits: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(bits, values) kept for backward: exactly one is a tensor. Binary -> 1 bit per element; ternary -> the
    bits and their sign words, [2R, words] (2 bits per element)."""
    if kind == KIND_BINARY:
        return bits, None
    if kind == KIND_TERNARY:
        rows = _rows(s)
        if bits.shape[0] != 2 * rows.shape[0]:  # measured as ternary (input_kind="auto"): pack the signs too
            bits = _pack_impl(rows, signs=True)[0]
        return bits, None
    return None, _saved_values(s, kind)


def _fake_fwd(s, w, cp, kind):
    y = s.new_empty((s.shape[0], w.shape[0])) if cp is None else s.new_empty((cp[0], cp[4], cp[7], cp[8]))
    r = _rows(s)
    rows = 2 * r.shape[0] if kind == KIND_TERNARY else r.shape[0]  # ternary: the sign words too
    return y, s.new_empty((rows, _words(r.shape[1])), dtype=torch.int64), s.new_empty(2, dtype=torch.int64)


def _fake_bwd(grad_y, s_shape, w, ns, nw, nb, bias_len):
    e = grad_y.new_empty
    return (e(s_shape) if ns else e(0), e(w.shape) if nw else e(0), e((bias_len,)) if nb else e(0))


# ---- the op (ops/_common.FusedOp): spike_linear and spike_conv2d are one fused op whose options say which.
# What the backward keeps depends on the input's kind. The eager path measures the kind first (a host read
# of the packing's info, free on CPU) and passes it as the op's kind; a compiled call cannot read data,
# so with input_kind "auto" it keeps the input values (KIND_FLOAT: correct for any input). Pass
# input_kind="binary" (as nn.SpikeLinear / SpikeConv2d do once they have seen their input) to keep 1 bit per
# element there too. The same save function serves both paths.
class SpikeOptions(NamedTuple):
    conv: bool  # spike_conv2d (else spike_linear)
    cp: list[int]  # conv: the 16 integers of csrc/core/spike.h SpikeConvParams (see _conv_params)
    mode: int
    kind: int
    training: bool  # the forward+backward crossover (else the forward-only one)


class SpikeBackwardOptions(NamedTuple):
    conv: bool
    cp: list[int]
    mode: int
    kind: int
    need_s: bool
    need_w: bool
    need_b: bool


def _layer(o) -> tuple[str, Optional[list[int]]]:
    return ("conv2d", list(o.cp)) if o.conv else ("linear", None)


def _forward(
    s: Tensor,
    w: Tensor,
    b: Optional[Tensor],
    grad_mask: Optional[Tensor],
    bits: Optional[Tensor],
    info: Optional[Tensor],
    o: SpikeOptions,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (y, bits, info). bits / info: the packing of s when the caller made it already (eager path)."""
    layer, cp = _layer(o)
    s, w = s.contiguous(), w.contiguous()
    b = None if b is None else b.contiguous()
    if bits is None:
        bits, info = _pack_impl(_rows(s), signs=o.training and o.kind == KIND_TERNARY)
    assert info is not None  # the eager path passes bits and info together (_run)
    kind = _resolve_kind(o.kind, info)
    sparse = _use_sparse(o.mode, kind, info, s.numel(), s.device, layer if o.training else layer + "_fwd", cp)
    # cp is None exactly for linear (_layer)
    y = _linear_forward_impl(s, w, b, sparse) if cp is None else _conv_forward_impl(s, w, b, cp, sparse)
    return y, bits, info


def _fake_forward(s, w, b, grad_mask, bits, info, o):
    return _fake_fwd(s, w, list(o.cp) if o.conv else None, o.kind)


def _backward(grad_y, bits, vals, info, w, grad_mask, bo: SpikeBackwardOptions) -> tuple[Tensor, Tensor, Tensor]:
    layer, cp = _layer(bo)
    return _bwd(
        layer,
        grad_y.contiguous(),
        bits,
        vals,
        info,
        w.contiguous(),
        grad_mask,
        cp,
        bo.mode,
        bo.kind,
        bo.need_s,
        bo.need_w,
        bo.need_b,
    )


def _fake_backward(grad_y, bits, vals, info, w, grad_mask, bo):
    s_shape = tuple(bo.cp[:4]) if bo.conv else (grad_y.shape[0], w.shape[1])
    return _fake_bwd(grad_y, s_shape, w, bo.need_s, bo.need_w, bo.need_b, w.shape[0])


def _save(inputs, o: SpikeOptions, outputs):
    s, w, b, grad_mask = inputs[:4]
    _, bits, info = outputs
    kind = KIND_FLOAT if o.kind == KIND_AUTO else o.kind
    sb, sv = _split_saved(kind, s, bits)
    return (sb, sv, info, w, grad_mask), (tuple(s.shape), s.dtype, kind, b is not None)


def _grads(saved, info, o: SpikeOptions, needs, grad_outputs, call_bwd):
    grad_y = grad_outputs[0]
    if grad_y is None:
        return [None] * 6
    sb, sv, pinfo, w, grad_mask = saved
    ns, nw, nb = needs[0], needs[1], bool(needs[2] and info[3])
    kind = info[2]
    bo = SpikeBackwardOptions(o.conv, o.cp, o.mode, kind, ns, nw, nb)
    gs, gw, gb = call_bwd(grad_y.contiguous(), sb, sv, pinfo, w, grad_mask, bo)
    return [gs if ns else None, gw if nw else None, gb if nb else None, None, None, None]


def _reference_inputs(saved, info):
    """The forward's inputs for a second-order backward: only where s itself was kept (input_kind="float",
    or non-spike input): a packed copy is no longer connected to s's graph."""
    sb, sv, pinfo, w, grad_mask = saved
    shape, dtype, kind, has_b = info
    if sv is None or sv.dtype != dtype or kind != KIND_FLOAT:
        return None
    # b's value does not enter any gradient (Y = S W^T + b): a zero leaf of its shape stands in for it
    b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device, requires_grad=True) if has_b else None
    return (sv.reshape(shape), w, b, grad_mask, None, None)


def _reference(s, w, b, grad_mask, bits, info, o: SpikeOptions):
    if not o.conv:
        return reference.spike_linear(s, w, b, grad_mask)
    stride, padding, dilation, groups = _conv_geometry(list(o.cp))
    return reference.spike_conv2d(s, w, b, stride, padding, dilation, groups, grad_mask)


# the router's op; op_inputs swaps in a recorder with the same call signature for the duration of a call
_OP: Union[FusedOp, Callable[..., Any]]
_OP = FusedOp(
    "spike",
    "spikeforge.ops (spike_linear / spike_conv2d)",
    inputs=("s", "w", "b?", "grad_mask?", "bits?", "info?"),
    options=SpikeOptions,
    n_out=3,
    visible=1,
    forward=_forward,
    fake_forward=_fake_forward,
    bwd_inputs=("grad_y", "bits?", "vals?", "info", "w", "grad_mask?"),
    bwd_options=SpikeBackwardOptions,
    n_grads=3,
    backward=_backward,
    fake_backward=_fake_backward,
    save=_save,
    grads=_grads,
    reference=_reference,
    reference_inputs=_reference_inputs,
    double_backward_hint="pass input_kind='float' so that the op keeps s itself instead of its packed bits",
)
spike_fwd, spike_bwd = _OP.fwd_op, _OP.bwd_op
_NO_CONV = [0] * 16


def op_inputs(fn, *args, **kw) -> tuple:
    """The positional inputs torch.ops.spikeforge.spike_fwd receives for the public call fn(*args, **kw) with
    grad-requiring inputs (e.g. op_inputs(spike_linear, s, w)): for opcheck and tests of the op itself. They
    are a compiled call's inputs: bits and info None (the op packs s itself). The eager path packs s first
    and hands the packing to its autograd Function, which returns it; the op would return its own inputs."""
    global _OP
    captured = []
    owner = threading.get_ident()

    class _Captured(Exception):
        pass

    class _Recorder:
        def __call__(self, tensors, opts, public=None):
            if threading.get_ident() != owner:  # another thread's call in the meantime: the real op
                return real(tensors, opts, public)
            captured.append((*tensors, *opts))
            raise _Captured

    real, _OP = _OP, _Recorder()
    try:
        fn(*args, **kw)
    except _Captured:
        pass
    finally:
        _OP = real
    if not captured:
        raise ValueError("op_inputs: the call did not reach the fused op (no grad needed, or no native kernels)")
    s, w, b, grad_mask, _bits, _info, *opts = captured[0]
    return (s, w, b, grad_mask, None, None, *opts)


# --------------------------------------------------------------------------------------------
# validation and public API (docs/spike_propagation.md)
# --------------------------------------------------------------------------------------------
def _check_s(s, name: str, min_dim: int) -> None:
    if not isinstance(s, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(s).__name__}")
    if s.is_complex():
        raise TypeError(f"{name} must be a real tensor (float, integer or bool), got {s.dtype}")
    if s.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(s.shape)}")


def _check_choice(name: str, value, table: dict) -> int:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in table:
        raise ValueError(f"{name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def _check_param(t, name: str, s: Tensor, shape: tuple, owner: str = "weight") -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device != s.device:
        raise ValueError(f"{name} is on {t.device} but s is on {s.device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _prepare(s: Tensor, weight: Tensor) -> Tensor:
    """Integer / bool spikes become weight's dtype; float spikes must match it."""
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if weight.device != s.device:
        raise ValueError(f"weight is on {weight.device} but s is on {s.device}")
    if not s.is_floating_point():
        return s.to(weight.dtype)
    if s.dtype != weight.dtype:
        raise TypeError(f"weight must have the dtype of s ({s.dtype}), got {weight.dtype}")
    return s


def _check_mask(grad_mask, s: Tensor) -> Optional[Tensor]:
    if grad_mask is None:
        return None
    if not isinstance(grad_mask, Tensor):
        raise TypeError(f"grad_mask must be a torch.Tensor or None, got {type(grad_mask).__name__}")
    if grad_mask.device != s.device:
        raise ValueError(f"grad_mask is on {grad_mask.device} but s is on {s.device}")
    if tuple(grad_mask.shape) != tuple(s.shape):
        raise ValueError(f"grad_mask must have the shape of s {tuple(s.shape)}, got {tuple(grad_mask.shape)}")
    return grad_mask if grad_mask.dtype == torch.bool else grad_mask != 0


def _pair(name: str, v, minimum: int) -> tuple[int, int]:
    vals = (v, v) if isinstance(v, int) and not isinstance(v, bool) else v
    if (
        not isinstance(vals, (tuple, list))
        or len(vals) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if min(vals) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    return int(vals[0]), int(vals[1])


def _autocast(s: Tensor, weight: Tensor, bias: Optional[Tensor]):
    """(s, weight, bias) in the autocast dtype where torch.autocast is on for s's device, as F.linear / F.conv2d
    take them there (floating tensors other than float64 are cast; spikes of an integer dtype are cast with the
    weight later). The call is then a 16-bit one, which runs the dense torch ops (the native kernels take
    float32): one layer returns one dtype whatever its input's firing rate (the event path returned float32
    and the dense path bfloat16 before), and 16-bit spikes of an autocast pipeline meet a float32 layer."""
    if not autocast_on(s.device):
        return s, weight, bias
    dt = torch.get_autocast_dtype(s.device.type)

    def cast(t):
        eligible = isinstance(t, Tensor) and t.is_floating_point() and t.dtype not in (dt, torch.float64)
        return t.to(dt) if eligible else t  # (anything else is checked, and named, after this)

    return cast(s), cast(weight), cast(bias)


def _run(
    layer: str,
    s: Tensor,
    w: Tensor,
    b: Optional[Tensor],
    grad_mask: Optional[Tensor],
    cp: Optional[list[int]],
    mode: int,
    kind: int,
) -> Tensor:
    """The router of the family: a measured kind for eager training calls (see SpikeOptions), the forward
    alone for inference. cp: the conv parameters (conv2d), None for linear."""
    conv = layer == "conv2d"
    public = f"spikeforge.ops.spike_{layer}"
    cpl = _NO_CONV if cp is None else list(cp)
    plain = (
        type(s) is torch.Tensor
        and not _tracing()
        and not s.is_meta
        and torch._C._functorch.maybe_current_level() is None
    )  # functorch transforms go to the op as they are
    needs_grad = torch.is_grad_enabled() and (s.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
    if plain and not needs_grad:
        if mode != MODE_AUTO and kind == KIND_AUTO:  # inference with a fixed path: no packing needed
            sparse = mode == MODE_SPARSE
            s, w = s.contiguous(), w.contiguous()
            b = None if b is None else b.contiguous()
            return _linear_forward_impl(s, w, b, sparse) if cp is None else _conv_forward_impl(s, w, b, cp, sparse)
        return _OP((s, w, b, grad_mask, None, None), SpikeOptions(conv, cpl, mode, kind, False), public)
    bits = info = None
    if plain:
        # eager training: measure the kind once (the packing is reused by the op) so that the backward keeps
        # the compact form of what s really holds
        s = s.contiguous()
        bits, info = _pack_impl(_rows(s), signs=kind == KIND_TERNARY)
        kind = _resolve_kind(kind, info)
    return _OP((s, w, b, grad_mask, bits, info), SpikeOptions(conv, cpl, mode, kind, True), public)


def spike_linear(
    s: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    mode: str = "auto",
    input_kind: str = "auto",
    grad_mask: Optional[Tensor] = None,
) -> Tensor:
    """Y = S W^T + b, event-driven below the firing-rate crossover. s [..., K] (binary spikes, small
    non-negative integer counts, ternary spikes -1/0/1, or any float), weight [N, K], bias [N] or None ->
    [..., N].

    mode: "auto" (by firing rate, CROSSOVER), "sparse" (event-driven kernels) or "dense" (torch).
    input_kind: "auto" (measured), or a promise "binary" / "counts" / "ternary" / "float" (checked) that
    fixes what is saved for backward without a host read. grad_mask (bool, s's shape) multiplies grad_s:
    zero where False (NaN there only where dY W itself is not finite, as (dY W) * mask).
    """
    _check_s(s, "s", 1)
    m, k = _check_choice("mode", mode, _MODES), _check_choice("input_kind", input_kind, _KINDS)
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}")
    s, weight, bias = _autocast(s, weight, bias)
    s = _prepare(s, weight)
    N, K = weight.shape
    if s.shape[-1] != K:
        raise ValueError(f"s: last dimension {s.shape[-1]} does not match weight's in_features {K}")
    if bias is not None:
        _check_param(bias, "bias", s, (N,))
        if bias.dtype != weight.dtype:
            raise TypeError(f"bias must have the dtype of weight ({weight.dtype}), got {bias.dtype}")
    grad_mask = _check_mask(grad_mask, s)
    if not _native_ok(s):
        return reference.spike_linear(s, weight, bias, grad_mask)
    lead = tuple(s.shape[:-1])
    M = math.prod(lead)
    s2d = s.reshape(M, K)
    gm = None if grad_mask is None else grad_mask.reshape(M, K)
    return _run("linear", s2d, weight, bias, gm, None, m, k).reshape(lead + (N,))


def spike_conv2d(
    s: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    *,
    mode: str = "auto",
    input_kind: str = "auto",
    grad_mask: Optional[Tensor] = None,
) -> Tensor:
    """2-D convolution of a spike tensor, event-driven below the firing-rate crossover.
    s [N, Cin, H, W] or [T, B, Cin, H, W]; weight [Cout, Cin / groups, kh, kw]; bias [Cout] or None.
    mode, input_kind and grad_mask as in spike_linear."""
    _check_s(s, "s", 0)
    if s.dim() not in (4, 5):
        raise ValueError(f"s must be [N, C, H, W] or [T, B, C, H, W], got shape {tuple(s.shape)}")
    m, k = _check_choice("mode", mode, _MODES), _check_choice("input_kind", input_kind, _KINDS)
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D [Cout, Cin / groups, kh, kw], got shape {tuple(weight.shape)}")
    st, pd, dl = _pair("stride", stride, 1), _pair("padding", padding, 0), _pair("dilation", dilation, 1)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    s, weight, bias = _autocast(s, weight, bias)
    s = _prepare(s, weight)
    Cout, cin_g, kh, kw = weight.shape
    Cin = s.shape[-3]
    # (torch's conv2d returns 0 output channels for 0 input channels, not the bias; nothing to propagate either way)
    if Cin == 0:
        raise ValueError(f"s has 0 channels (shape {tuple(s.shape)}): a convolution needs at least one input channel")
    if Cout == 0:
        raise ValueError(f"weight has 0 output channels (shape {tuple(weight.shape)}): nothing to compute")
    if groups < 1 or Cin % groups or Cout % groups:
        raise ValueError(f"groups must be >= 1 and divide in_channels ({Cin}) and out_channels ({Cout}), got {groups}")
    if cin_g * groups != Cin:
        raise ValueError(f"weight: in_channels / groups = {cin_g} does not match s's {Cin} channels / {groups}")
    if bias is not None:
        _check_param(bias, "bias", s, (Cout,))
        if bias.dtype != weight.dtype:
            raise TypeError(f"bias must have the dtype of weight ({weight.dtype}), got {bias.dtype}")
    if s.shape[-2] == 0 or s.shape[-1] == 0:  # torch's conv rejects these too, with a less clear message
        raise ValueError(f"s: empty feature maps ({s.shape[-2]} x {s.shape[-1]}) are not supported")
    grad_mask = _check_mask(grad_mask, s)
    lead = tuple(s.shape[:-3])
    s4 = s.reshape((math.prod(lead),) + tuple(s.shape[-3:]))  # not -1: ambiguous when H or W is 0
    cp = _conv_params(s4, weight, st, pd, dl, groups)
    if cp[7] < 1 or cp[8] < 1:
        raise ValueError(
            f"s: input {tuple(s.shape[-2:])} is smaller than the dilated kernel "
            f"({dl[0] * (kh - 1) + 1}, {dl[1] * (kw - 1) + 1}) after padding {pd}"
        )
    if not _native_ok(s):
        return reference.spike_conv2d(s, weight, bias, st, pd, dl, groups, grad_mask)
    gm = None if grad_mask is None else grad_mask.reshape(s4.shape)
    y = _run("conv2d", s4, weight, bias, gm, cp, m, k)
    return y.reshape(lead + tuple(y.shape[1:]))


def spike_stats(s: Tensor) -> tuple[int, str]:
    """(non-zeros, kind) of a spike tensor: kind "binary" (0/1), "counts" (integers in [0, 255]), "ternary"
    (-1/0/1) or "float" (anything else, e.g. -1 together with 2). Reads the device (one synchronisation on
    CUDA)."""
    _check_s(s, "s", 0)
    flat = s.reshape(1, -1)
    if not flat.is_floating_point():
        flat = flat.float()
    if not _native_ok(flat):
        v = flat.float()
        counts = (v > 1) & (v <= 255) & (v == v.round())
        classes = (
            (CLASS_COUNTS if bool(counts.any()) else 0)
            | (CLASS_NEG_ONE if bool((v == -1).any()) else 0)
            | (CLASS_OTHER if bool((~(counts | (v == 0) | (v == 1) | (v == -1))).any()) else 0)
        )
        return int((v != 0).sum()), _KIND_NAMES[_kind_of(classes)]
    _, info = _pack_impl(flat)
    return int(info[0]), _KIND_NAMES[_kind_of(int(info[1]))]


def saved_bytes(s: Tensor, input_kind: str = "auto", layer: Optional[str] = None) -> int:
    """Bytes of s that spike_linear / spike_conv2d keep for backward (eager path): 1 bit per element for
    binary input (packed int64 rows, padded to whole words), 2 bits for ternary (the bits and their sign
    words), 1 byte for counts, the input itself for other floats. layer "linear" packs rows of the last
    dimension, "conv2d" one row per [C, H, W] sample; None: "linear" for 2-D / 3-D s, else "conv2d"."""
    kind = _check_choice("input_kind", input_kind, _KINDS)
    if layer is None:
        layer = "linear" if s.dim() <= 3 else "conv2d"
    if layer not in ("linear", "conv2d"):
        raise ValueError(f"layer must be 'linear', 'conv2d' or None, got {layer!r}")
    if kind == KIND_AUTO:
        kind = _KINDS[spike_stats(s)[1]]
    if kind in (KIND_BINARY, KIND_TERNARY):
        K = s.shape[-1] if layer == "linear" else math.prod(s.shape[-3:])
        return (s.numel() // max(K, 1)) * _words(K) * 8 * (2 if kind == KIND_TERNARY else 1)
    return s.numel() * (1 if kind == KIND_COUNTS else s.element_size())
