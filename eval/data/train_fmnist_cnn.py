#!/usr/bin/python3
"""Trains the small Fashion-MNIST CNN that `mlink-eval adapt` deploys, and exports it.

Usage: train_fmnist_cnn.py OUT.pt [--fmnist DIR] [--epochs N] [--seed S]

The model is the "deployed black box" of the oracle-link experiment (paper Section 4.2, Table 4):
trained on the original Fashion-MNIST training split only (no augmentation), so that domain
shifts applied later hurt it. Exported with torch.jit.script.

  input:  float32 [N, 1, 28, 28], pixels scaled to [0, 1] (pixel / 255)
  output: float32 [N, 10], softmax class probabilities

Run with Debian's python3 (python3-torch, python3-numpy), whose PyTorch matches libtorch-dev.
Deterministic for a given seed (same losses and accuracy on every run here); 3 epochs take about
75 s of CPU time, two minutes or so of wall time on two shared cores.
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch


class FmnistCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 7 * 7, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def read_idx(path, header):
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=header)


def load(dir_, train):
    prefix = os.path.join(dir_, "train" if train else "t10k")
    images = read_idx(prefix + "-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = read_idx(prefix + "-labels-idx1-ubyte.gz", 8)
    if images.shape[0] != labels.shape[0]:
        raise SystemExit("Fashion-MNIST files under %s disagree on sizes" % dir_)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def accuracy(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], 1000):
            correct += int((model.logits(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    return correct / x.shape[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="TorchScript file to write")
    p.add_argument("--fmnist", default=os.environ.get("MLINK_FMNIST_DIR") or "/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    x_train, y_train = load(args.fmnist, True)
    x_test, y_test = load(args.fmnist, False)
    model = FmnistCnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(args.seed)
    batch = 128
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen)
        total = 0.0
        for i in range(0, perm.shape[0], batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model.logits(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * idx.shape[0]
        print("epoch %d/%d: train loss %.4f (%.0f s)" % (epoch, args.epochs, total / perm.shape[0], time.time() - t0),
              flush=True)
    acc = accuracy(model, x_test, y_test)
    print("test accuracy %.4f" % acc, flush=True)

    model.eval()
    scripted = torch.jit.script(model)
    tmp = args.out + ".tmp"
    scripted.save(tmp)
    os.replace(tmp, args.out)  # a reader never sees a half-written model
    print("wrote %s" % args.out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
