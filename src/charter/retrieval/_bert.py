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
from typing import TYPE_CHECKING

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
        import torch

        w = self.w
        batch, length = ids.shape
        positions = torch.arange(length)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.token_type_embeddings.weight"][types]
            + w["embeddings.position_embeddings.weight"][positions]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        # padding is masked out of attention: an additive bias of the dtype's minimum on padded keys
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for i in range(self.layers):
            x = self._layer(x, bias, f"encoder.layer.{i}.", batch, length)
        return x

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
