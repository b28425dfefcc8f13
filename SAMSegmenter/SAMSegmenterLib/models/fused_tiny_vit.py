"""Inference-only TinyViT: the LiteMedSAM encoder rebuilt for speed, same function.

:func:`fuse_tiny_vit` turns a loaded :class:`tiny_vit.TinyViT` into a
:class:`FusedTinyViT` that computes the same embedding with less work:

- every convolution + batch norm pair is folded into one convolution with bias
  (``w' = w * g / sqrt(var + eps)``, ``b' = beta - mean * g / sqrt(var + eps)``);
- the attention biases are gathered once from their table instead of per call,
  and shaped so that PyTorch's fused CPU attention kernel takes them (a 3-D mask
  sends ``scaled_dot_product_attention`` to its slow reference path);
- activations stay channels-last (tokens ``(B, H*W, C)`` *are* NHWC), so the
  layout changes around the depth-wise convolutions are views, not copies;
- the neck's channel layer norms run as ``F.layer_norm`` on NHWC;
- with ``tile_rows``, the wide intermediates (the 4x expanded convolutions of the
  first stage and the patch merges, the MLP hidden layers) are computed in bands of
  rows: they then fit in cache, and no block of tens of megabytes is allocated, and
  page-faulted in again, per call (glibc maps such blocks fresh each time);
- optionally (``onednn=True``, CPU only) a convolution or linear layer and the
  GELU or residual addition after it run as one oneDNN call (the kernels that
  ``torch.compile`` uses on CPU): PyTorch's stand-alone GELU costs as much as the
  convolution before it on the 256 x 256 x 256 activations of the first stage.
  These are private PyTorch operators: :mod:`backends` warms the model up and checks
  its masks before use, and uses another backend where they fail.

The weights may then be cast to bfloat16, all of them (``.to(torch.bfloat16)``:
everything runs in bf16) or only those of the layers that tolerate it
(:func:`mixed_precision`: the matrix products run in bf16, the residual stream and
the layers that read it at full resolution stay float32). Whether either is
accurate enough is decided by mask parity (see :mod:`backends`), not assumed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .tiny_vit import Attention, Conv2dBN, LayerNorm2d, MBConv, PatchMerging, TinyViT, TinyViTBlock, window_attention


def fold_conv_bn(pair: Conv2dBN) -> nn.Conv2d:
    """One convolution with bias equal to ``pair`` (a bias-free conv followed by batch norm in eval mode)."""
    conv, bn = pair.c, pair.bn
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused


def onednn_available() -> bool:
    """Whether this PyTorch has the oneDNN fused convolution/linear operators used with ``onednn=True``."""
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_linear_pointwise"))


def conv2d(x: torch.Tensor, conv: nn.Conv2d, onednn: bool, gelu: bool = False,
           residual: torch.Tensor | None = None, padding: tuple[int, int] | None = None) -> torch.Tensor:
    """``conv(x)`` (with ``padding`` instead of the layer's if given), plus ``residual``, then GELU.

    ``x`` is cast to the layer's dtype; the result has the layer's dtype, or the
    residual's when one is added. With ``onednn`` the convolution and its activation
    or addition (same dtypes) are one oneDNN call.
    """
    pad = list(conv.padding if padding is None else padding)
    x = x.to(conv.weight.dtype)
    if residual is not None and residual.dtype != x.dtype:
        y = residual + conv2d(x, conv, onednn, padding=padding)  # in the residual's dtype
        return F.gelu(y) if gelu else y
    if onednn:
        args = (conv.weight, conv.bias, pad, list(conv.stride), list(conv.dilation), conv.groups)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "gelu" if gelu else "none", [], "none")
        y = torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, None, [], None)
        return F.gelu(y) if gelu else y  # oneDNN has no add-then-GELU fusion
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, pad, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.gelu(y) if gelu else y


def linear(x: torch.Tensor, layer: nn.Linear, onednn: bool, gelu: bool = False,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``layer(x)`` then GELU (``gelu``) or plus ``residual`` (not both); one oneDNN call when ``onednn``.

    ``x`` is cast to the layer's dtype; the result has the layer's dtype, or the residual's.
    """
    if gelu and residual is not None:
        raise ValueError("linear() fuses a GELU or a residual addition, not both")
    x = x.to(layer.weight.dtype)
    if residual is not None and residual.dtype != x.dtype:
        return residual + linear(x, layer, onednn)  # in the residual's dtype
    if onednn:
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, layer.weight, layer.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "gelu" if gelu else "none", [], "none")
    y = layer(x)
    if residual is not None:
        return y + residual
    return F.gelu(y) if gelu else y


def _channels_last_nchw(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) tokens as an (B, C, H, W) channels-last view (no copy)."""
    return tokens.view(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last tensor as (B, H*W, C) tokens (a view when already channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _bands(rows: int, band: int | None) -> list[tuple[int, int]]:
    """[start, stop) ranges covering ``rows`` rows in bands of ``band`` rows (one band when None)."""
    band = band or rows
    return [(r0, min(rows, r0 + band)) for r0 in range(0, rows, band)]


def _expand_depthwise(x: torch.Tensor, r0: int, r1: int, expand: nn.Conv2d, depthwise: nn.Conv2d,
                      onednn: bool) -> torch.Tensor:
    """``GELU(depthwise(GELU(expand(x))))`` for output rows ``r0:r1`` only.

    ``expand`` is point-wise, ``depthwise`` a 3x3 convolution with padding 1 and any
    stride s: output row o reads input rows s*o-1 .. s*o+1, so only those are expanded,
    and the rows the padding adds at the image border are zero rows, as in the whole image.
    """
    stride, h = depthwise.stride[0], x.shape[2]
    a0, a1 = stride * r0 - 1, stride * (r1 - 1) + 2
    y = conv2d(x[:, :, max(0, a0):min(h, a1)], expand, onednn, gelu=True)
    if a0 < 0 or a1 > h:  # (F.pad copies the band even when it adds nothing)
        y = F.pad(y, (0, 0, max(0, -a0), max(0, a1 - h)))
    return conv2d(y, depthwise, onednn, gelu=True, padding=(0, depthwise.padding[1]))


class FusedMBConv(nn.Module):
    """:class:`tiny_vit.MBConv` with folded batch norms, computed in bands of ``tile_rows`` rows.

    The expanded activations (4x the channels, at full resolution in the first stage)
    are the largest tensors of the encoder; a band at a time (see
    :func:`_expand_depthwise`) they stay in cache, and no block of tens of megabytes
    is allocated (and page-faulted in) per call. Bands give the whole image's values.
    """

    def __init__(self, block: MBConv, onednn: bool, tile_rows: int | None):
        super().__init__()
        self.onednn, self.tile_rows = onednn, tile_rows
        self.conv1, self.conv2, self.conv3 = (fold_conv_bn(block.conv1), fold_conv_bn(block.conv2),
                                              fold_conv_bn(block.conv3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = _bands(x.shape[2], self.tile_rows)
        out = torch.empty_like(x) if len(bands) > 1 else None
        for r0, r1 in bands:
            y = _expand_depthwise(x, r0, r1, self.conv1, self.conv2, self.onednn)
            y = conv2d(y, self.conv3, self.onednn, gelu=True, residual=x[:, :, r0:r1])
            if out is None:
                return y
            out[:, :, r0:r1] = y
        return out


class FusedPatchMerging(nn.Module):
    """:class:`tiny_vit.PatchMerging` with folded batch norms, in bands of ``tile_rows`` output rows:
    NCHW (channels-last) or tokens -> tokens."""

    def __init__(self, merge: PatchMerging, onednn: bool, tile_rows: int | None):
        super().__init__()
        self.onednn, self.tile_rows = onednn, tile_rows
        self.resolution = merge.resolution
        self.conv1, self.conv2, self.conv3 = (fold_conv_bn(merge.conv1), fold_conv_bn(merge.conv2),
                                              fold_conv_bn(merge.conv3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = _channels_last_nchw(x, *self.resolution)
        out_rows = (x.shape[2] - 1) // self.conv2.stride[0] + 1
        tokens = [_tokens(conv2d(_expand_depthwise(x, r0, r1, self.conv1, self.conv2, self.onednn), self.conv3,
                                 self.onednn)) for r0, r1 in _bands(out_rows, self.tile_rows)]
        return tokens[0] if len(tokens) == 1 else torch.cat(tokens, dim=1)


class FusedAttention(nn.Module):
    """:class:`tiny_vit.Attention` with its relative-position bias gathered once (a buffer)."""

    def __init__(self, attn: Attention, onednn: bool):
        super().__init__()
        self.onednn = onednn
        self.num_heads, self.key_dim, self.scale = attn.num_heads, attn.key_dim, attn.scale
        self.norm, self.qkv, self.proj = attn.norm, attn.qkv, attn.proj
        # (1, heads, N, N): a 4-D mask lets PyTorch use its fused (flash) CPU attention kernel.
        self.register_buffer("bias", attn.attention_biases.detach()[None, :, attn.attention_bias_idxs].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(windows, N, C) -> (windows, N, C), in the dtype of ``proj``; attention itself in ``x``'s dtype."""
        b, n, _ = x.shape
        qkv = linear(self.norm(x), self.qkv, self.onednn).to(x.dtype)
        qkv = qkv.view(b, n, self.num_heads, 3 * self.key_dim).transpose(1, 2)
        q, k, v = qkv.split(self.key_dim, dim=3)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias.to(x.dtype), scale=self.scale)
        return linear(x.transpose(1, 2).reshape(b, n, -1), self.proj, self.onednn)


class FusedTinyViTBlock(nn.Module):
    """:class:`tiny_vit.TinyViTBlock`: window attention, depth-wise conv (on an NHWC view), MLP."""

    def __init__(self, block: TinyViTBlock, onednn: bool, tile_rows: int | None):
        super().__init__()
        self.onednn, self.tile_rows = onednn, tile_rows
        self.resolution, self.window_size = block.resolution, block.window_size
        self.attn = FusedAttention(block.attn, onednn)
        self.norm, self.fc1, self.fc2 = block.mlp.norm, block.mlp.fc1, block.mlp.fc2
        self.local_conv = fold_conv_bn(block.local_conv)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``x + MLP(x)``, in bands of ``tile_rows`` rows of tokens (the hidden layer is 4x wider)."""
        w = self.resolution[1]
        bands = _bands(self.resolution[0], self.tile_rows)
        out = torch.empty_like(x) if len(bands) > 1 else None
        for r0, r1 in bands:
            part = x[:, r0 * w:r1 * w]
            hidden = linear(self.norm(part), self.fc1, self.onednn, gelu=True)
            y = linear(hidden, self.fc2, self.onednn, residual=part)
            if out is None:
                return y
            out[:, r0 * w:r1 * w] = y
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        x = x + window_attention(x, self.attn, self.resolution, self.window_size)
        return self._mlp(_tokens(conv2d(_channels_last_nchw(x, h, w), self.local_conv, self.onednn)))


class FusedTinyViT(nn.Module):
    """The LiteMedSAM encoder, inference only: (B, 3, S, S) -> (B, 256, S/4, S/4) float32 NCHW.

    Runs in the dtype of its weights (float32, or bfloat16 after ``.to(torch.bfloat16)``);
    the input is cast to that dtype and the embedding returned as float32. ``onednn``
    fuses layers with their activations through oneDNN (CPU only); ``tile_rows``
    computes the wide intermediates (expanded convolutions, MLP hidden layers) in
    bands of that many rows (None: whole images).
    """

    def __init__(self, encoder: TinyViT, onednn: bool = False, tile_rows: int | None = None):
        super().__init__()
        self.onednn = onednn
        embed = encoder.patch_embed.seq
        self.embed1, self.embed2 = fold_conv_bn(embed[0]), fold_conv_bn(embed[2])
        stages = []
        for stage in encoder.layers:
            blocks = [FusedMBConv(b, onednn, tile_rows) if isinstance(b, MBConv)
                      else FusedTinyViTBlock(b, onednn, tile_rows) for b in stage.blocks]
            if stage.downsample is not None:
                blocks.append(FusedPatchMerging(stage.downsample, onednn, tile_rows))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.embedding_size = encoder.embedding_size
        neck = encoder.neck
        self.neck_conv1, self.neck_conv2 = neck[0], neck[2]
        self.neck_norm1, self.neck_norm2 = self._layer_norm(neck[1]), self._layer_norm(neck[3])

    @staticmethod
    def _layer_norm(norm: LayerNorm2d) -> nn.LayerNorm:
        layer = nn.LayerNorm(norm.weight.shape[0], eps=norm.eps)
        with torch.no_grad():
            layer.weight.copy_(norm.weight)
            layer.bias.copy_(norm.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=self.embed1.weight.dtype, memory_format=torch.channels_last)
        x = conv2d(conv2d(x, self.embed1, self.onednn, gelu=True), self.embed2, self.onednn)
        x = self.stages(x)
        s = self.embedding_size
        x = _channels_last_nchw(x, s, s)
        for conv, norm in ((self.neck_conv1, self.neck_norm1), (self.neck_conv2, self.neck_norm2)):
            y = conv2d(x, conv, onednn=False).to(norm.weight.dtype)
            x = norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x.float().contiguous()

    def mixed_precision_layers(self) -> list[nn.Module]:
        """The layers run in bfloat16 by :func:`mixed_precision` (``fused-mixed``).

        Measured one group at a time (``benchmarks/bf16_sensitivity.py``, Dice of the
        masks with the float32 reference on 33 MNI152 and CT cases): the transformer
        blocks' linear layers, which read layer-normalised tokens, and the neck keep
        every mask within 0.99; the MBConv projection, whose output is added to the
        float32 stream, all but one; the local depth-wise convolutions and the patch
        merges 0.98 at worst; the first-stage expansion and depth-wise convolutions
        0.97, and the patch embedding (the image itself) 0.93. Judged by the ground-truth
        rule (:mod:`.ground_truth_parity`), the set up to the local convolutions and
        patch merges passes, and adding the first-stage expansions and depth-wise
        convolutions fails (docs/speed.md); the residual stream, the attention, the
        first stage and the patch embedding stay float32.
        """
        layers: list[nn.Module] = [self.neck_conv1, self.neck_conv2]
        for module in self.stages.modules():
            if isinstance(module, FusedTinyViTBlock):
                layers += [module.attn.qkv, module.attn.proj, module.fc1, module.fc2, module.local_conv]
            elif isinstance(module, FusedMBConv):
                layers.append(module.conv3)
            elif isinstance(module, FusedPatchMerging):
                layers += [module.conv1, module.conv2, module.conv3]
        return layers


def fuse_tiny_vit(encoder: TinyViT, dtype: torch.dtype = torch.float32, onednn: bool = False,
                  tile_rows: int | None = None) -> FusedTinyViT:
    """A :class:`FusedTinyViT` equal in function to ``encoder``, with weights in ``dtype``, same device.

    Shares no parameters with ``encoder``, so casting it leaves the reference intact.
    ``onednn`` needs a CPU encoder and :func:`onednn_available`; ``tile_rows`` (e.g. 32)
    pays off on CPUs, whose caches the whole-image intermediates overflow.
    """
    device = next(encoder.parameters()).device
    if onednn and (device.type != "cpu" or not onednn_available()):
        raise RuntimeError("oneDNN fused operators need a CPU model and a PyTorch built with oneDNN")
    return FusedTinyViT(copy.deepcopy(encoder).eval(), onednn, tile_rows).to(device=device, dtype=dtype).eval()


def mixed_precision(model: FusedTinyViT, dtype: torch.dtype = torch.bfloat16) -> FusedTinyViT:
    """``model`` with :meth:`FusedTinyViT.mixed_precision_layers` cast to ``dtype`` (in place):
    their inputs are cast on the way in, their outputs added to the float32 residual stream."""
    for layer in model.mixed_precision_layers():
        layer.to(dtype)
    return model
