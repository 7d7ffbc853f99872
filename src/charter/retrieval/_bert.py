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

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        x = self.embed_tokens(ids, types)
        bias = self.attention_bias(mask, x.dtype)
        for i in range(self.layers):
            x = self._layer(x, bias, f"encoder.layer.{i}.", batch, length)
        return x

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

    def _layer(self, x: torch.Tensor, bias: torch.Tensor, p: str, batch: int, length: int) -> torch.Tensor:
        from torch.nn import functional as f

        w, heads = self.w, self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (batch, length, hidden) -> (batch, heads, length, head)
            return t.view(batch, length, heads, self.hidden // heads).transpose(1, 2)

        def dense(t: torch.Tensor, name: str) -> torch.Tensor:
            return f.linear(t, w[f"{p}{name}.weight"], w[f"{p}{name}.bias"])

        q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        attended = f.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attended = attended.transpose(1, 2).reshape(batch, length, self.hidden)
        x = self._norm(dense(attended, "attention.output.dense") + x, f"{p}attention.output.LayerNorm")
        inner = f.gelu(dense(x, "intermediate.dense"))  # the exact (erf) GELU, config "gelu"
        return self._norm(dense(inner, "output.dense") + x, f"{p}output.LayerNorm")

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        from torch.nn import functional as f

        return f.layer_norm(x, (self.hidden,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)


# The question's embedding is on every request's path, and on this model it is bound by its 36 matrix products
# (~10 of ~11 ms for a 17-token question on one core in float32; docs/benchmarks.md, "Question encoder"). A
# reduced precision does them faster, for a vector close to, not equal to, float32's — which is why it is an
# opt-in for questions only (``retrieval.question_precision``; documents are always float32, their vectors stored):
#
# * ``bfloat16``: weights and each product's input rounded to bfloat16, accumulated in float32 (native on
#   CPUs with AVX-512 BF16 or AMX). Cosine to float32 >= 0.99997 on our benchmark questions; ~6 ms.
# * ``int8``: int8 products with int32 accumulation (``torch._int_mm``; AVX-512 VNNI where the CPU has it),
#   each weight matrix symmetric per output row, each activation symmetric per token at run time, so one large
#   activation in one token does not coarsen the others' (the per-tensor scheme of torch's dynamic
#   quantisation, fbgemm, measured cosine 0.985 at worst; this one 0.996 at worst, 0.998 median); ~4 ms.
#
# Everything else (embeddings, LayerNorm, attention, GELU, pooling) stays float32, and query, key and value
# are one product.
class _Layer(NamedTuple):
    """One encoder layer's weights for :class:`QuantizedBertEncoder` (query, key and value fused)."""

    qkv: tuple[torch.Tensor, ...]
    out: tuple[torch.Tensor, ...]
    up: tuple[torch.Tensor, ...]
    down: tuple[torch.Tensor, ...]
    norm1: torch.Tensor
    norm1_bias: torch.Tensor
    norm2: torch.Tensor
    norm2_bias: torch.Tensor


class QuantizedBertEncoder:
    """``encoder(ids, mask, types)`` like :class:`BertEncoder`, with the dense layers' products in ``precision``
    (``int8`` or ``bfloat16``)."""

    PRECISIONS = ("int8", "bfloat16")

    def __init__(self, base: BertEncoder, precision: str = "int8") -> None:
        import torch

        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, not {precision!r}")
        self.base, self.precision = base, precision
        self._linear = self._int8 if precision == "int8" else self._bfloat16
        w = base.w

        def dense(name: str) -> tuple[torch.Tensor, ...]:
            return self._prepare(w[f"{name}.weight"], w[f"{name}.bias"])

        self.layers: list[_Layer] = []
        for i in range(base.layers):
            p = f"encoder.layer.{i}."
            qkv = [f"{p}attention.self.{n}" for n in ("query", "key", "value")]
            self.layers.append(
                _Layer(
                    qkv=self._prepare(
                        torch.cat([w[f"{n}.weight"] for n in qkv]), torch.cat([w[f"{n}.bias"] for n in qkv])
                    ),
                    out=dense(f"{p}attention.output.dense"),
                    up=dense(f"{p}intermediate.dense"),
                    down=dense(f"{p}output.dense"),
                    norm1=w[f"{p}attention.output.LayerNorm.weight"],
                    norm1_bias=w[f"{p}attention.output.LayerNorm.bias"],
                    norm2=w[f"{p}output.LayerNorm.weight"],
                    norm2_bias=w[f"{p}output.LayerNorm.bias"],
                )
            )

    def _prepare(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch

        if self.precision == "bfloat16":
            return weight.to(torch.bfloat16), bias.to(torch.bfloat16)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12)  # per output row
        q = torch.round(weight * (127.0 / scale)[:, None]).to(torch.int8)
        # (in, out) for x @ q; times the activation's amax, this scale undoes both roundings' scaling
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
        from torch.nn import functional as f

        base, linear = self.base, self._linear
        batch, length = ids.shape
        hidden, heads, eps = base.hidden, base.heads, base.eps
        x = base.embed_tokens(ids, types).reshape(batch * length, hidden)
        bias = base.attention_bias(mask, x.dtype) if batch > 1 else None  # one text: no padding
        for layer in self.layers:
            qkv = linear(x, layer.qkv).view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            attended = f.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
            attended = attended.transpose(1, 2).reshape(batch * length, hidden)
            x = f.layer_norm(linear(attended, layer.out) + x, (hidden,), layer.norm1, layer.norm1_bias, eps)
            inner = f.gelu(linear(x, layer.up))
            x = f.layer_norm(linear(inner, layer.down) + x, (hidden,), layer.norm2, layer.norm2_bias, eps)
        return x.view(batch, length, hidden)
