"""Runs one forward+backward of a benchmark case a few times, for ncu / compute-sanitizer to watch.
usage: python bench/gpu/profile_cases.py {lif16,psn32} [reps]"""

import sys

import torch

import spikeforge as sf

case = sys.argv[1]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 2
dev = torch.device("cuda")
if case == "lif16":
    x = torch.randn(32, 64, 65536, device=dev, dtype=torch.float16, requires_grad=True)
    fn = lambda: sf.ops.lif(x, tau=2.0, surrogate="sigmoid")[0]  # noqa: E731
    params = [x]
elif case == "psn32":
    T = 32
    x = torch.randn(T, 64, 65536, device=dev, requires_grad=True)
    w = (torch.randn(T, T, device=dev) / T**0.5).requires_grad_()
    b = (-torch.ones(T, device=dev)).requires_grad_()
    fn = lambda: sf.ops.psn(x, w, b)  # noqa: E731
    params = [x, w, b]
elif case == "small":
    # every kernel family at small shapes (PSN buckets 8/16/32/64, more than one partition, PLIF's
    # reduction, spike layers, attention), for compute-sanitizer memcheck / racecheck, where full-size
    # cases take too long
    def fn_small():
        outs = []
        for T in (3, 13, 32, 64):
            xx = torch.randn(T, 2, 20011, device=dev, requires_grad=True)
            ww = (torch.randn(T, T, device=dev) / T**0.5).requires_grad_()
            bb = (-torch.ones(T, device=dev)).requires_grad_()
            s1 = sf.ops.psn(xx, ww, bb)
            s2 = sf.ops.masked_psn(xx, ww, bb, k=3, lam=0.5)
            s3 = sf.ops.sliding_psn(xx, ww[0, :5].detach().requires_grad_(), bb[0].detach().requires_grad_())
            wp = torch.zeros((), device=dev, requires_grad=True)  # scalar w (per-channel: dim 2)
            s4, v4 = sf.ops.plif(xx * 2, wp, surrogate="atan", return_v="seq")
            s5, _ = sf.ops.lif(xx.half() * 2, v_reset=None)
            loss = s1.sum() + s2.sum() + s3.sum() + (s4 * v4).sum() + s5.float().sum()
            outs.append(torch.autograd.grad(loss, [xx, ww, bb, wp]))
        # event-driven spike layers, forced onto the sparse kernels (auto is dense on CUDA until measured)
        sp = (torch.rand(300, 777, device=dev) < 0.05).float().requires_grad_()
        wl = torch.randn(129, 777, device=dev, requires_grad=True)
        y = sf.ops.spike_linear(sp, wl, torch.zeros(129, device=dev), mode="sparse")
        sc = (torch.rand(3, 16, 19, 17, device=dev) < 0.1).float().requires_grad_()
        wc = torch.randn(24, 8, 3, 3, device=dev, requires_grad=True)
        yc = sf.ops.spike_conv2d(sc, wc, None, stride=2, padding=1, dilation=1, groups=2, mode="sparse")
        # a conv with more than one 64-channel mask word per pixel, groups straddling a word, partial tiles
        sg = (torch.rand(2, 130, 7, 7, device=dev) < 0.2).float().requires_grad_()
        wg = torch.randn(80, 65, 3, 3, device=dev, requires_grad=True)
        yg = sf.ops.spike_conv2d(sg, wg, None, padding=1, groups=2, mode="sparse")
        outs.append(
            torch.autograd.grad(y.square().sum() + yc.square().sum() + yg.square().sum(), [sp, wl, sc, wc, sg, wg])
        )
        # the attention kernels ([T, B, heads, N, D] spikes; N * D not a multiple of the block)
        qa, ka, va = ((torch.rand(3, 2, 2, 37, 24, device=dev) < 0.3).float().requires_grad_() for _ in range(3))
        att = (
            sf.ops.ssa(qa, ka, va).sum()
            + sf.ops.sdsa(qa, ka, va).sum()
            + sf.ops.qk_token_attention(qa, ka).sum()
            + sf.ops.qk_channel_attention(qa, ka).sum()
        )
        outs.append(torch.autograd.grad(att, [qa, ka, va]))
        packed = sf.ops.pack_spikes(sp.detach())
        assert torch.equal(sf.ops.unpack_spikes(packed), sp.detach())
        return outs

    fn, params = None, None
    for _ in range(reps):
        fn_small()
    torch.cuda.synchronize()
    print("ok", case)
    raise SystemExit(0)
else:
    raise SystemExit(f"unknown case {case}")
g = None
for _ in range(reps):
    s = fn()
    if g is None:
        g = torch.randn_like(s)
    torch.autograd.grad(s, params, g)
torch.cuda.synchronize()
print("ok", case)
