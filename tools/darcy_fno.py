"""An FNO baseline on fo-edge's Darcy sets, trained as `fo-edge simulate --model mano --dataset darcy32` trains MANO.

    python tools/darcy_fno.py --size 32 --epochs 100 --lr-milestones 40,70,90 --lr-gamma 0.5

FNO-2D as Li et al. (2021) build it for Darcy: the input (a, x, y) per point lifted to ``--width`` channels, four
Fourier layers (the lowest ``--modes`` frequencies of each axis mixed by learned complex weights, plus a 1x1
convolution, GELU between layers), the grid zero-padded by 8 points on the bottom and right because the problem is
not periodic, then a 128-channel projection to u. Data, scaling and training are fo-edge's MANO run's
(families.mano): a -> (a - 7.5) / 4.5, u over the training split's standard deviation, 1000/200 samples, Adam,
MSE, batch 16, the lr stepped at the milestones; the printed metric is the test split's mean relative L2 error of u
per epoch (fo_edge.darcy.relative_l2), the MANO run's metric.
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from fo_edge.darcy import DARCY_SPLIT, darcy_dataset, relative_l2

PAD = 8


class SpectralConv2d(torch.nn.Module):
    """u (B, C, H, W) -> irfft2(R . rfft2(u)) on the lowest ``modes`` frequencies of each axis (both signs on the
    first axis), R complex (C_in, C_out, modes, modes) per corner."""

    def __init__(self, width: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        self.w1 = torch.nn.Parameter(scale * torch.rand(width, width, modes, modes, dtype=torch.cfloat))
        self.w2 = torch.nn.Parameter(scale * torch.rand(width, width, modes, modes, dtype=torch.cfloat))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, c, rows, cols = u.shape
        m = self.modes
        spec = torch.fft.rfft2(u)
        out = torch.zeros(b, c, rows, cols // 2 + 1, dtype=torch.cfloat)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, :m, :m], self.w1)
        out[:, :, -m:, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, -m:, :m], self.w2)
        return torch.fft.irfft2(out, s=(rows, cols))


class FNO2d(torch.nn.Module):
    """a (B, n, n) -> u (B, n, n)."""

    def __init__(self, modes: int, width: int):
        super().__init__()
        self.lift = torch.nn.Linear(3, width)
        self.spectral = torch.nn.ModuleList([SpectralConv2d(width, modes) for _ in range(4)])
        self.pointwise = torch.nn.ModuleList([torch.nn.Conv2d(width, width, 1) for _ in range(4)])
        self.proj1, self.proj2 = torch.nn.Linear(width, 128), torch.nn.Linear(128, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        n = a.shape[-1]
        grid = torch.linspace(0.0, 1.0, n)
        ys, xs = torch.meshgrid(grid, grid, indexing="ij")
        h = self.lift(torch.stack([a, xs.expand_as(a), ys.expand_as(a)], dim=-1)).permute(0, 3, 1, 2)
        h = F.pad(h, (0, PAD, 0, PAD))
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(h) + pointwise(h)
            if i < 3:
                h = F.gelu(h)
        h = h[:, :, :n, :n].permute(0, 2, 3, 1)
        return self.proj2(F.gelu(self.proj1(h)))[..., 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-milestones", default="40,70,90")
    parser.add_argument("--lr-gamma", type=float, default=0.5)
    parser.add_argument("--modes", type=int, default=12)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    milestones = [int(m) for m in args.lr_milestones.split(",") if m]
    data = darcy_dataset(args.size, *DARCY_SPLIT, seed=0)
    scale = float(data.u_train.std())
    a_train = torch.as_tensor((data.a_train - 7.5) / 4.5)
    u_train = torch.as_tensor(data.u_train / scale)
    a_test = torch.as_tensor((data.a_test - 7.5) / 4.5)
    torch.manual_seed(args.seed)
    model = FNO2d(args.modes, args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    params = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    print(f"FNO-2D on darcy{args.size}: {params} real parameters, modes {args.modes}, width {args.width}")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * args.lr_gamma ** sum(epoch >= m for m in milestones)
        order = np.random.default_rng([args.seed, epoch]).permutation(len(a_train))
        model.train()
        for begin in range(0, len(order), args.batch_size):
            idx = torch.as_tensor(order[begin:begin + args.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss = 0.5 * ((model(a_train[idx]) - u_train[idx]) ** 2).sum() / len(idx)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            error = relative_l2(model(a_test).numpy() * scale, data.u_test)
        print(f"epoch {epoch + 1}: test relative L2 {error:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
