"""A BERT encoder's forward pass in plain torch, over a ``config.json`` + ``model.safetensors`` folder.

Why not transformers' ``BertModel``: importing it costs ~2.9 s of CPU (it pulls in ``torch._dynamo``,
``torch.distributed``, sympy and ``scipy.optimize`` through its loss and generation utilities) in every process
that embeds — each server worker's warm-up, every CLI ``ask``/``search``/``sync``, ``charter mcp serve`` —,
against ~0.1 s for this module and ``safetensors``. The model it serves is fixed and small (the built-in
all-MiniLM-L6-v2: 6 post-LayerNorm layers, absolute positions, GELU), so the forward pass is the textbook one
(Devlin et al. 2019; the same operations, in the same order, as ``BertModel`` in inference mode), and a folder
whose configuration asks for anything else is refused rather than computed differently. It is checked
against sentence-transformers (which runs transformers' ``BertModel``) on the example documents, on texts
over the token limit and on generated text (``tests/retrieval/test_embedding_encoder.py``): the vectors agree
to within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from charter.errors import CharterRuntimeError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

# what this forward pass implements; any other value in config.json is refused
_REQUIRED = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}
_PREFIXES = ("", "bert.")  # checkpoints saved from BertModel, or from a task model wrapping it


class BertEncoder:
    """``encoder(ids, mask, types)`` → the last hidden state, ``(batch, tokens, hidden)`` float32."""

    def __init__(self, model_dir: str | Path) -> None:
        from safetensors.torch import load_file

        base = Path(model_dir)
        try:
            cfg = json.loads((base / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise CharterRuntimeError(f"{base}: no readable config.json ({exc})") from exc
        wrong = {k: cfg.get(k, v) for k, v in _REQUIRED.items() if cfg.get(k, v) != v}
        if wrong or cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise CharterRuntimeError(
                f"{base}: only a plain BERT encoder ({_REQUIRED}) can be run; config.json has {wrong or cfg}"
            )
        weights = load_file(str(base / "model.safetensors"))
        prefix = next((p for p in _PREFIXES if f"{p}embeddings.word_embeddings.weight" in weights), None)
        if prefix is None:
            raise CharterRuntimeError(f"{base}: model.safetensors holds no BERT embeddings")
        self.w = {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)}
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self._quantized: dict[str, QuantizedBertEncoder] = {}
        missing = [k for k in self._names() if k not in self.w]
        if missing:
            raise CharterRuntimeError(
                f"{base}: model.safetensors lacks {missing[:3]} (and {len(missing)} in all)"
            )
        self.prepared = [self._prepare_layer(i) for i in range(self.layers)]

    def _names(self) -> list[str]:
        names = [
            f"embeddings.{n}.weight"
            for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
        ]
        names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            for part in (
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ):
                names += [f"{p}{part}.weight", f"{p}{part}.bias"]
        return names

    def _prepare_layer(self, i: int) -> _Layer:
        """Layer ``i``'s float32 weights as the forward pass uses them: query, key and value as one product,
        every matrix ``(in, out)`` and contiguous (``x @ w``, the layout the BLAS is fastest with for the few
        rows of a question: 0.4-1.6 ms of ~10 less than ``x @ w.T`` per question on one core, docs/benchmarks.md,
        *The question encoder's floor*). The original matrices are dropped: one copy of the model in memory."""
        import torch

        w, p = self.w, f"encoder.layer.{i}."

        def dense(*names: str) -> tuple[torch.Tensor, ...]:
            weight = torch.cat([w.pop(f"{p}{n}.weight") for n in names])
            bias = torch.cat([w.pop(f"{p}{n}.bias") for n in names])
            return weight.t().contiguous(), bias

        return _Layer(
            qkv=dense("attention.self.query", "attention.self.key", "attention.self.value"),
            out=dense("attention.output.dense"),
            up=dense("intermediate.dense"),
            down=dense("output.dense"),
            norm1=w[f"{p}attention.output.LayerNorm.weight"],
            norm1_bias=w[f"{p}attention.output.LayerNorm.bias"],
            norm2=w[f"{p}output.LayerNorm.weight"],
            norm2_bias=w[f"{p}output.LayerNorm.bias"],
        )

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return self.forward(ids, mask, types, self.prepared, _float32)

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        types: torch.Tensor,
        layers: list[_Layer],
        linear: Callable[[torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor],
    ) -> torch.Tensor:
        """The encoder over ``layers``, each dense layer computed by ``linear(x, layer.<part>)``: float32 here,
        another precision in :class:`QuantizedBertEncoder`. A single text has no padding, so no mask."""
        from torch.nn import functional as f

        batch, length = ids.shape
        hidden, heads, eps = self.hidden, self.heads, self.eps
        x = self.embed_tokens(ids, types).reshape(batch * length, hidden)
        bias = self.attention_bias(mask, x.dtype) if batch > 1 else None
        for layer in layers:
            qkv = linear(x, layer.qkv).view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            attended = f.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
            attended = attended.transpose(1, 2).reshape(batch * length, hidden)
            x = f.layer_norm(linear(attended, layer.out) + x, (hidden,), layer.norm1, layer.norm1_bias, eps)
            inner = f.gelu(linear(x, layer.up))  # the exact (erf) GELU, config "gelu"
            x = f.layer_norm(linear(inner, layer.down) + x, (hidden,), layer.norm2, layer.norm2_bias, eps)
        return x.view(batch, length, hidden)

    def embed_tokens(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """The embedding layer: word + token type + absolute position embeddings, layer-normalised."""
        import torch

        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.token_type_embeddings.weight"][types]
            + w["embeddings.position_embeddings.weight"][torch.arange(ids.shape[1])]
        )
        return self._norm(x, "embeddings.LayerNorm")

    @staticmethod
    def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Padding is masked out of attention: an additive bias of the dtype's minimum on padded keys."""
        import torch

        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def quantized(self, precision: str) -> QuantizedBertEncoder:
        """This encoder with its matrix products in ``precision`` (:class:`QuantizedBertEncoder`), built once."""
        if precision not in self._quantized:
            self._quantized[precision] = QuantizedBertEncoder(self, precision)
        return self._quantized[precision]

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        from torch.nn import functional as f

        return f.layer_norm(x, (self.hidden,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)


# The question's embedding is on every request's path, and on this model it is bound by its 24 matrix products
# (~6-8 of ~9 ms for a 12-token question on one core in float32: the 42.5 MB of weights are read for a few rows
# each; docs/benchmarks.md, "The question encoder's floor"). A reduced precision does them faster, for a vector
# close to, not equal to, float32's — which is why it is an opt-in for questions only
# (``retrieval.question_precision``; documents are always float32, their vectors stored):
#
# * ``bfloat16``: weights and each product's input rounded to bfloat16, accumulated in float32 (native on
#   CPUs with AVX-512 BF16 or AMX). Cosine to float32 >= 0.99997 on our benchmark questions; ~6 ms.
# * ``int8``: int8 products with int32 accumulation (``torch._int_mm``; AVX-512 VNNI where the CPU has it),
#   each weight matrix symmetric per output row, each activation symmetric per token at run time, so one large
#   activation in one token does not coarsen the others' (the per-tensor scheme of torch's dynamic
#   quantisation, fbgemm, measured cosine 0.985 at worst; this one 0.996 at worst, 0.998 median); ~4 ms.
#
# Everything else (embeddings, LayerNorm, attention, GELU, pooling) stays float32; the forward pass is the
# float32 one (:meth:`BertEncoder.forward`) with another ``linear``.
class _Layer(NamedTuple):
    """One encoder layer's weights as :meth:`BertEncoder.forward` takes them (query, key and value fused; each
    product's operands in the form its ``linear`` wants)."""

    qkv: tuple[torch.Tensor, ...]
    out: tuple[torch.Tensor, ...]
    up: tuple[torch.Tensor, ...]
    down: tuple[torch.Tensor, ...]
    norm1: torch.Tensor
    norm1_bias: torch.Tensor
    norm2: torch.Tensor
    norm2_bias: torch.Tensor


def _float32(x: torch.Tensor, spec: tuple[torch.Tensor, ...]) -> torch.Tensor:
    import torch

    weight, bias = spec  # weight (in, out)
    return torch.addmm(bias, x, weight)


class QuantizedBertEncoder:
    """``encoder(ids, mask, types)`` like :class:`BertEncoder`, with the dense layers' products in ``precision``
    (``int8`` or ``bfloat16``)."""

    PRECISIONS = ("int8", "bfloat16")

    def __init__(self, base: BertEncoder, precision: str = "int8") -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, not {precision!r}")
        self.base, self.precision = base, precision
        self._linear = self._int8 if precision == "int8" else self._bfloat16
        self.layers: list[_Layer] = [
            layer._replace(
                qkv=self._prepare(*layer.qkv),
                out=self._prepare(*layer.out),
                up=self._prepare(*layer.up),
                down=self._prepare(*layer.down),
            )
            for layer in base.prepared
        ]

    def _prepare(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """From a float32 ``(in, out)`` matrix and its bias: bfloat16 ``(out, in)`` for ``linear``, or int8
        ``(in, out)`` for ``x @ q`` with its per-output-row scales."""
        import torch

        if self.precision == "bfloat16":
            return weight.t().contiguous().to(torch.bfloat16), bias.to(torch.bfloat16)
        rows = weight.t()  # (out, in)
        scale = rows.abs().amax(dim=1).clamp(min=1e-12)  # per output row
        q = torch.round(rows * (127.0 / scale)[:, None]).to(torch.int8).contiguous()
        # ``q.t()``: (in, out) for x @ q, as a view (``torch._int_mm`` is ~10 % faster on it than on a copy);
        # times the activation's amax, this scale undoes both roundings' scaling
        return q.t(), scale / (127.0 * 127.0), bias.clone()

    @staticmethod
    def _bfloat16(x: torch.Tensor, spec: tuple[torch.Tensor, ...]) -> torch.Tensor:
        import torch
        from torch.nn import functional as f

        weight, bias = spec
        return f.linear(x.to(torch.bfloat16), weight, bias).to(torch.float32)

    @staticmethod
    def _int8(x: torch.Tensor, spec: tuple[torch.Tensor, ...]) -> torch.Tensor:
        import torch

        weight, scale, bias = spec
        amax = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)  # per token
        q = (x * (127.0 / amax)).round_().to(torch.int8)
        return torch.addcmul(bias, torch._int_mm(q, weight).to(torch.float32), amax * scale)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return self.base.forward(ids, mask, types, self.layers, self._linear)
