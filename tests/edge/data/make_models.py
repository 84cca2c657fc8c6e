#!/usr/bin/python3
"""Exports two tiny models with known outputs for the edge adapter tests.

out[0] = mean pixel of the [1, C, H, W] input, out[1] = 2 * that, out[2] = 3 * that.
Writes OUT/mean3.pt (TorchScript, torch.jit.script) and OUT/mean3.onnx (for cv::dnn).
Run with Debian's python3 (python3-torch), whose PyTorch matches libtorch-dev.
"""
import sys

import torch


class Mean3(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 2 * m, 3 * m], dim=1)


def main():
    out = sys.argv[1]
    torch.jit.script(Mean3()).save(out + "/mean3.pt")
    try:
        torch.onnx.export(Mean3(), torch.zeros(1, 1, 8, 8), out + "/mean3.onnx", opset_version=11,
                          input_names=["input"], output_names=["out"])
    except Exception as e:  # ONNX export needs optional packages; the TorchScript model suffices
        print("onnx export skipped:", e, file=sys.stderr)


if __name__ == "__main__":
    main()
