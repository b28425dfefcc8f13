"""Which layers of LiteMedSAM's encoder keep the masks when they compute in bfloat16?

The fused float32 encoder (SAMSegmenterLib.models.fused_tiny_vit) is run with one group
of layers at a time cast to bfloat16: their inputs are rounded to bf16 on the way
in, their weights are bf16 and their outputs come out in bf16; everything else,
including the residual stream, stays float32. For each group the table gives the
Dice of the masks with the float32 reference masks (smallest and median over the
cases) and how many cases fall below 0.99, on the speed benchmark's 9 cases plus
seeded random MNI152 cases (see benchmarks/speed.py). The last rows are the
`fused-mixed` set (FusedTinyViT.mixed_precision_layers) and everything in bf16.

This is how `fused-mixed` was put together; it is a measurement, not a test. On a CPU
without native bf16, --emulate-bf16 runs the same on PyTorch's generic kernels (no oneDNN
fusion; the same bf16 rounding of inputs, weights and outputs; several times slower).

    python benchmarks/bf16_sensitivity.py [--quick] [--random N] [--emulate-bf16] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402  (benchmark cases, reference model, dice)

from SAMSegmenterLib.models import backends  # noqa: E402
from SAMSegmenterLib.models.fused_tiny_vit import (  # noqa: E402
    FusedMBConv,
    FusedPatchMerging,
    FusedTinyViT,
    FusedTinyViTBlock,
    fuse_tiny_vit,
)
from SAMSegmenterLib.prompts import Prompt  # noqa: E402


def layer_groups(encoder: FusedTinyViT) -> dict[str, list[nn.Module]]:
    """The encoder's layers by kind, in the order they run."""
    groups: dict[str, list[nn.Module]] = {name: [] for name in (
        "patch embedding", "MBConv expansion", "MBConv depth-wise", "MBConv projection",
        "patch merging", "local depth-wise conv", "attention qkv", "attention projection",
        "MLP fc1", "MLP fc2")}
    groups["patch embedding"] += [encoder.embed1, encoder.embed2]
    for module in encoder.stages.modules():
        if isinstance(module, FusedMBConv):
            groups["MBConv expansion"].append(module.conv1)
            groups["MBConv depth-wise"].append(module.conv2)
            groups["MBConv projection"].append(module.conv3)
        elif isinstance(module, FusedPatchMerging):
            groups["patch merging"] += [module.conv1, module.conv2, module.conv3]
        elif isinstance(module, FusedTinyViTBlock):
            groups["local depth-wise conv"].append(module.local_conv)
            groups["attention qkv"].append(module.attn.qkv)
            groups["attention projection"].append(module.attn.proj)
            groups["MLP fc1"].append(module.fc1)
            groups["MLP fc2"].append(module.fc2)
    groups["neck"] = [encoder.neck_conv1, encoder.neck_conv2]
    groups["fused-mixed set"] = encoder.mixed_precision_layers()
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 benchmark cases, 4 random ones")
    parser.add_argument("--random", type=int, default=None, help="random cases (default 24, quick 4)")
    parser.add_argument("--emulate-bf16", action="store_true",
                        help="without native bf16, use PyTorch's generic bf16 kernels (slow)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = parser.parse_args()
    native = backends.bf16_native()
    if not native and not args.emulate_bf16:
        print("this CPU has no native bf16 arithmetic: nothing to measure (--emulate-bf16 runs it slowly)")
        return
    ref = speed.reference_model()
    cases = speed.benchmark_cases(args.quick) + speed.random_cases(args.random or (4 if args.quick else 24))
    reference_masks = [ref.decode(ref.encode(c.image), Prompt(box=c.box)).masks[0] for c in cases]
    model = speed.with_encoder(ref, "fused")
    rows = {}
    print(f"LiteMedSAM encoder, one group of layers in bf16 at a time; Dice with the float32 reference "
          f"masks over {len(cases)} cases")
    print(f"  {'layers in bf16':24s} {'layers':>6s} {'min Dice':>9s} {'median':>8s} {'< 0.99':>7s}")
    for name in [*layer_groups(model.encoder), "everything"]:
        # a fresh float32 copy each time (casting back would keep the rounding); oneDNN's fusion needs native bf16
        model.encoder = (backends.build_encoder(ref, "fused") if native else
                         fuse_tiny_vit(ref.network.image_encoder, tile_rows=backends.TILE_ROWS))
        layers = [model.encoder] if name == "everything" else layer_groups(model.encoder)[name]
        for layer in layers:
            layer.to(torch.bfloat16)
        dices = [speed.dice(r, model.decode(model.encode(c.image), Prompt(box=c.box)).masks[0])
                 for r, c in zip(reference_masks, cases)]
        below = sum(d < backends.PARITY_DICE for d in dices)
        rows[name] = {"layers": len(layers), "dice_min": min(dices), "dice_median": statistics.median(dices),
                      "below_0_99": below}
        print(f"  {name:24s} {len(layers):6d} {min(dices):9.4f} {statistics.median(dices):8.4f} {below:7d}")
    if args.json:
        print(json.dumps({"cases": len(cases), "groups": rows}))


if __name__ == "__main__":
    main()
