"""How a trained spiking run's hidden neurons use their range: per hidden layer, the share of (image, neuron)
spike counts at 0 and at the layer's maximum, the mean count and the weights' spread.

    python tools/spike_saturation.py RUN_DIR [--images 1000]

Counts come from fo-edge's float spiking inference (models.spiking, the snnTorch path) on the run's stored
weights and the first test images; the maximum count of hidden layer l is T - l (one synaptic delay per layer),
and counts within one of it are reported as saturated.
"""
import argparse

import numpy as np
import torch

from fo_edge.data import load_dataset
from fo_edge.models.spiking import SpikingMLP
from fo_edge.runs import load_trained, real_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    run = load_trained(args.run_dir, spiking=True)
    sp = run.profile.spiking
    weights = real_weights(run)
    data = load_dataset(run.record["config"]["dataset"])
    _, counts, _, _ = SpikingMLP([torch.as_tensor(w) for w in weights], sp)(
        torch.as_tensor(data.x_test[:args.images]))
    print(f"command: python tools/spike_saturation.py {args.run_dir} --images {args.images}\n")
    print("| layer | mean count | at 0 | within 1 of the maximum | weight std | max abs weight |\n"
          "|---|---|---|---|---|---|")
    for l, c in enumerate(counts):
        c = c.numpy()
        top = sp.timesteps - (l + 1) * sp.delay
        print(f"| hidden {l + 1} | {c.mean():.2f} of {top} | {100 * (c == 0).mean():.1f} % | "
              f"{100 * (c >= top - 1).mean():.1f} % | {weights[l].std():.3f} | {np.abs(weights[l]).max():.3f} |")
    print(f"| output | | | | {weights[-1].std():.3f} | {np.abs(weights[-1]).max():.3f} |")


if __name__ == "__main__":
    main()
