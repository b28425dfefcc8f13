"""SAM's mask decoder rebuilt for inference speed, same function and same weights.

:class:`FastMaskDecoder` computes what segment-anything's ``MaskDecoder`` (with its
``TwoWayTransformer``) computes, for every SAM-family model, with less work per prompt:

- the dense positional encoding of the image grid is computed once, not per call;
- image tokens stay ``(B, H*W, C)`` contiguous (a free view of a channels-last
  embedding), so the work on the 4096 image tokens reads memory in order;
- the cross attentions between the few prompt tokens (about 7) and the 4096 image
  tokens fold their image-side projections into the token side (exact algebra,
  see :func:`_tokens_to_image`), which more than halves their arithmetic;
- the two 2x2, stride-2 transposed convolutions of the upscaling are matrix products
  (each output pixel of such a convolution depends on one input pixel), and the
  layer norm and GELUs between them are per pixel, so the 16 sub-pixels of each
  embedding cell are only put in image order once, in the final mask;
- the upscaling runs on chunks of image tokens, each turned into mask logits at
  once: a few megabytes of intermediates instead of tens, which stay in cache and
  are not handed back to the operating system (and page-faulted in again) per call;
- only the requested outputs (mask 0, masks 1-3 with ``multimask``, or all four) are made.

It shares its parameters with the reference modules (float32).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

UPSCALE_CHUNK = 512  # image tokens upscaled at a time (each becomes 16 mask pixels)


def _attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``Attention`` (projections, heads, softmax(q k^T / sqrt(d)) v, output projection)."""
    q, k, v = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)
    b, heads = q.shape[0], attn.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, x.shape[1], heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return attn.out_proj(out.transpose(1, 2).reshape(b, q.shape[1], -1))


def _folds(attn: nn.Module, tokens: int) -> bool:
    """Whether folding the projections of the image side pays: heads x tokens below the projected width."""
    return attn.num_heads * tokens < attn.internal_dim


def _tokens_to_image(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``_attention`` for a few queries (B, Nq, C) on many image keys/values (B, Nk, C), projections folded.

    Per head h, with d channels: q_h k_h^T = (q_h W_k,h) k^T + a per-query constant,
    which the softmax ignores, and P v_h = (P v) W_v,h^T + b_v,h because each row of
    P sums to 1. So the image tokens are never projected: two products of width
    heads x Nq replace two projections of width C/2 over every image token.
    """
    if not _folds(attn, q.shape[1]):
        return _attention(attn, q, k, v)
    b, nq, _ = q.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    qh = attn.q_proj(q).view(b, nq, heads, d).transpose(1, 2)
    a = torch.matmul(qh, attn.k_proj.weight.view(heads, d, -1)).reshape(b, heads * nq, -1)
    p = torch.softmax(torch.matmul(a * (d ** -0.5), k.transpose(1, 2)), dim=-1)
    pv = torch.matmul(p, v).view(b, heads, nq, -1)
    out = torch.matmul(pv, attn.v_proj.weight.view(heads, d, -1).transpose(1, 2)) + attn.v_proj.bias.view(heads, 1, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, nq, -1))


def _image_to_tokens(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``_attention`` for many image queries (B, Nk, C) on a few token keys/values (B, Nq, C), projections folded.

    Per head h: q_h k_h^T = q (W_q,h^T k_h^T) + b_q,h k_h^T, and the output projection
    of the concatenated heads is sum_h P_h (v_h W_o,h^T) + b_o; both products with
    the image tokens have width heads x Nq instead of C/2 and C.
    """
    if not _folds(attn, k.shape[1]):
        return _attention(attn, q, k, v)
    b, nk, _ = q.shape
    nq = k.shape[1]
    heads = attn.num_heads
    d = attn.internal_dim // heads
    scale = d ** -0.5
    kh = attn.k_proj(k).view(b, nq, heads, d).transpose(1, 2)
    vh = attn.v_proj(v).view(b, nq, heads, d).transpose(1, 2)
    wq = (torch.matmul(kh, attn.q_proj.weight.view(heads, d, -1)) * scale).reshape(b, heads * nq, -1)
    bq = (torch.matmul(kh, attn.q_proj.bias.view(heads, d, 1)) * scale).reshape(b, 1, heads * nq)
    s = torch.baddbmm(bq, q, wq.transpose(1, 2)).view(b, nk, heads, nq)
    # softmax over the Nq (about 7) tokens, written out: ATen's softmax is slow on so short a last axis
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    p = (e / e.sum(dim=-1, keepdim=True)).view(b, nk, heads * nq)
    g = torch.matmul(vh, attn.out_proj.weight.view(-1, heads, d).permute(1, 2, 0)).reshape(b, heads * nq, -1)
    return torch.baddbmm(attn.out_proj.bias.view(1, 1, -1), p, g)


def _two_way_block(block: nn.Module, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                   key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """segment-anything's ``TwoWayAttentionBlock``: token self-attention, token->image, MLP, image->token."""
    if block.skip_first_layer_pe:
        queries = _attention(block.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + _attention(block.self_attn, q, q, queries)
    queries = block.norm1(queries)
    k = keys + key_pe
    queries = block.norm2(queries + _tokens_to_image(block.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = block.norm3(queries + block.mlp(queries))
    keys = block.norm4(keys + _image_to_tokens(block.cross_attn_image_to_token, k, queries + query_pe, queries))
    return queries, keys


def _transposed_conv_as_linear(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (4*C_out, C_in) and bias of a 2x2 stride-2 transposed convolution as a linear layer.

    Output features are ordered (row offset, column offset, channel).
    """
    if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2) or tuple(conv.padding) != (0, 0):
        raise ValueError("expected a 2x2 transposed convolution with stride 2 and no padding")
    weight = conv.weight.detach().permute(2, 3, 1, 0).reshape(-1, conv.in_channels).contiguous()
    return weight, conv.bias.detach().repeat(4)


class FastMaskDecoder(nn.Module):
    """Prompt embeddings + image embedding -> low-resolution mask logits and predicted IoUs.

    Built from a model's ``prompt_encoder`` and ``mask_decoder`` (any SAM-family
    model); ``forward`` has the arguments and results of ``MaskDecoder.forward``
    apart from ``image_pe``, which it keeps.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module):
        super().__init__()
        self.decoder = mask_decoder
        with torch.no_grad():
            pe = prompt_encoder.get_dense_pe()
        self.register_buffer("image_pe", pe.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        up1, norm, _, up2, _ = mask_decoder.output_upscaling
        self.norm = norm
        w1, b1 = _transposed_conv_as_linear(up1)
        w2, b2 = _transposed_conv_as_linear(up2)
        self.register_buffer("up1_weight", w1, persistent=False)
        self.register_buffer("up1_bias", b1, persistent=False)
        self.register_buffer("up2_weight", w2, persistent=False)
        self.register_buffer("up2_bias", b2, persistent=False)

    def _upscale(self, src: torch.Tensor) -> torch.Tensor:
        """(B, H*W, C) tokens -> (B, H*W*16, C/8) upscaled features, sub-pixels grouped per cell."""
        b = src.shape[0]
        channels = self.norm.weight.shape[0]
        y = F.linear(src, self.up1_weight, self.up1_bias).view(b, -1, channels)
        y = F.gelu(F.layer_norm(y, (channels,), self.norm.weight, self.norm.bias, self.norm.eps))
        y = F.gelu(F.linear(y, self.up2_weight, self.up2_bias))
        return y.view(b, -1, self.up2_weight.shape[0] // 4)

    def forward(self, image_embeddings: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings (1, C, H, W); sparse (B, N, C); dense (B, C, H, W) ->
        (masks (B, M, 4H, 4W), iou (B, M)), M = 3 with ``multimask_output`` else 1."""
        selected = range(1, self.decoder.num_mask_tokens) if multimask_output else range(0, 1)
        return self.predict_outputs(image_embeddings, sparse_prompt_embeddings, dense_prompt_embeddings, selected)

    def predict_outputs(self, image_embeddings: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                        dense_prompt_embeddings: torch.Tensor, selected: range) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``forward`` for the mask tokens in ``selected`` (0: the single output, 1-3: SAM's
        multimask outputs), from one pass of the transformer: M = ``len(selected)``."""
        dec = self.decoder
        transformer = dec.transformer
        b = sparse_prompt_embeddings.shape[0]
        h, w = image_embeddings.shape[-2:]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings), dim=1)
        keys = (image_embeddings.flatten(2).transpose(1, 2) + dense_prompt_embeddings.flatten(2).transpose(1, 2))
        keys = keys.contiguous()
        queries = tokens
        for block in transformer.layers:
            queries, keys = _two_way_block(block, queries, keys, tokens, self.image_pe)
        attn_out = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + self.image_pe, keys)
        queries = transformer.norm_final_attn(queries + attn_out)

        hyper = torch.stack([dec.output_hypernetworks_mlps[i](queries[:, 1 + i, :]) for i in selected], dim=1)
        hyper = hyper.transpose(1, 2)
        masks = torch.cat([torch.matmul(self._upscale(keys[:, start:start + UPSCALE_CHUNK]), hyper)
                           for start in range(0, h * w, UPSCALE_CHUNK)], dim=1)  # (B, H*W*16, M)
        m = masks.shape[-1]
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, m, 4 * h, 4 * w)
        iou = dec.iou_prediction_head(queries[:, 0, :])[:, selected.start:selected.stop]
        return masks, iou


def checked_fast_decoder(prompt_encoder: nn.Module, mask_decoder: nn.Module) -> FastMaskDecoder | None:
    """A :class:`FastMaskDecoder` that matched the reference decoder on a random embedding, else None.

    Checked once per loaded model, in float32, with a box prompt, for the single output,
    the multimask outputs and all four together; a failure (an operator missing on this device, a mismatch) is
    logged and the caller keeps the reference decoder.
    """
    try:
        fast = FastMaskDecoder(prompt_encoder, mask_decoder)
        device = fast.image_pe.device
        generator = torch.Generator().manual_seed(0)
        size = prompt_encoder.image_embedding_size
        image = torch.randn(1, fast.image_pe.shape[-1], *size, generator=generator).to(device)
        side = prompt_encoder.input_image_size
        box = torch.tensor([[0.2 * side[1], 0.25 * side[0], 0.7 * side[1], 0.8 * side[0]]], device=device)
        with torch.inference_mode():
            sparse, dense = prompt_encoder(points=None, boxes=box, masks=None)
            ref_masks, ref_iou = mask_decoder.predict_masks(
                image_embeddings=image, image_pe=prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense)
            count = mask_decoder.num_mask_tokens
            for selected in (range(0, 1), range(1, count), range(0, count)):
                out = fast.predict_outputs(image.contiguous(memory_format=torch.channels_last), sparse, dense, selected)
                ref = (ref_masks[:, selected.start:selected.stop], ref_iou[:, selected.start:selected.stop])
                for a, b in zip(out, ref):
                    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-2):
                        raise ValueError(f"fast decoder differs from the reference by "
                                         f"{(a - b).abs().max().item():.3g}")
        return fast
    except Exception as exc:
        log.warning("using the reference mask decoder: %s", exc)
        return None
