"""PyTorch peer implementation of the `moe` model (docs/model-spec.md).

This file is deliberately plain: a functional model over a dict ``name -> tensor`` whose keys are
exactly the tensor names of the spec, so weights/gradients can be saved and loaded by name with no
translation.  It exists to produce golden files for the Rust implementation (crates/model), not to
be fast.

Everything is computed in the dtype of the tensors passed in (the golden generator uses float64,
check_golden.py float32).

Public entry points
-------------------
``ModelConfig.from_dict`` / ``ModelConfig.to_toml``   config in the spec's key names
``moe_layers(cfg)``                                      indices of MoE layers
``init_params(cfg, gen)``                                random float32 params + buffers
``forward(cfg, params, buffers, tokens, targets)``       logits, losses, routing info
``adamw_trajectory(...)``                                AdamW + clipping + aux-free bias update
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class MoEConfig:
    n_expert: int = 8
    n_expert_active: int = 2
    d_expert: int = 256
    n_expert_shared: int = 0
    d_expert_shared: Optional[int] = None  # default: d_expert
    gating: str = "softmax"  # "softmax" | "sigmoid"
    renormalize: bool = True
    route_scale: float = 1.0
    capacity_factor: float = 0.0  # 0 = dropless
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    bias_update_rate: float = 0.0
    every: int = 1
    first_dense: int = 0
    n_expert_per_layer: List[int] = field(default_factory=list)

    def __post_init__(self):
        if self.d_expert_shared is None:
            self.d_expert_shared = self.d_expert
        assert self.gating in ("softmax", "sigmoid"), self.gating


@dataclass
class ModelConfig:
    n_vocab: int = 256
    n_ctx: int = 256
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    n_head_kv: int = 2
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    d_ff: int = 512
    activation: str = "swiglu"  # "swiglu" | "gelu"
    moe: Optional[MoEConfig] = None

    def __post_init__(self):
        assert self.d_model % self.n_head == 0
        assert self.n_head % self.n_head_kv == 0
        assert self.activation in ("swiglu", "gelu"), self.activation
        assert (self.d_model // self.n_head) % 2 == 0
        if self.moe is not None and self.moe.n_expert_per_layer:
            assert len(self.moe.n_expert_per_layer) == len(moe_layers(self))

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        d = dict(d)
        moe = d.pop("moe", None)
        return ModelConfig(**d, moe=None if moe is None else MoEConfig(**moe))

    def to_toml(self) -> str:
        """The `[model]` / `[model.moe]` tables, every key written explicitly."""
        lines = ["[model]"]
        for f in fields(self):
            if f.name == "moe":
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        if self.moe is not None:
            lines.append("")
            lines.append("[model.moe]")
            for f in fields(self.moe):
                lines.append(f"{f.name} = {_toml_value(getattr(self.moe, f.name))}")
        return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}"
        s = repr(v)  # shortest round-trip repr, e.g. 1e-05 -> normalised below
        if "e" in s:
            mant, exp = s.split("e")
            s = f"{mant}e{int(exp)}"
        return s
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def is_moe_layer(cfg: ModelConfig, i: int) -> bool:
    m = cfg.moe
    return m is not None and i >= m.first_dense and (i + 1) % m.every == 0


def moe_layers(cfg: ModelConfig) -> List[int]:
    return [i for i in range(cfg.n_layer) if is_moe_layer(cfg, i)]


def layer_n_expert(cfg: ModelConfig, i: int) -> int:
    """E of MoE layer i (n_expert_per_layer is indexed by MoE-layer order)."""
    m = cfg.moe
    if m.n_expert_per_layer:
        return m.n_expert_per_layer[moe_layers(cfg).index(i)]
    return m.n_expert


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def param_shapes(cfg: ModelConfig) -> Dict[str, tuple]:
    """Every parameter, by spec name, in a fixed order."""
    d, dh = cfg.d_model, cfg.d_head
    s = {"tok_embeddings.weight": (cfg.n_vocab, d)}
    for i in range(cfg.n_layer):
        p = f"layers.{i}."
        s[p + "attn_norm.weight"] = (d,)
        s[p + "attn.wq.weight"] = (cfg.n_head * dh, d)
        s[p + "attn.wk.weight"] = (cfg.n_head_kv * dh, d)
        s[p + "attn.wv.weight"] = (cfg.n_head_kv * dh, d)
        s[p + "attn.wo.weight"] = (d, cfg.n_head * dh)
        s[p + "ffn_norm.weight"] = (d,)
        if is_moe_layer(cfg, i):
            m, E = cfg.moe, layer_n_expert(cfg, i)
            s[p + "ffn.router.weight"] = (E, d)
            s[p + "ffn.experts.w_gate"] = (E, m.d_expert, d)
            s[p + "ffn.experts.w_up"] = (E, m.d_expert, d)
            s[p + "ffn.experts.w_down"] = (E, d, m.d_expert)
            if m.n_expert_shared > 0:
                ds = m.n_expert_shared * m.d_expert_shared
                s[p + "ffn.shared.w_gate.weight"] = (ds, d)
                s[p + "ffn.shared.w_up.weight"] = (ds, d)
                s[p + "ffn.shared.w_down.weight"] = (d, ds)
        else:
            if cfg.activation == "swiglu":
                s[p + "ffn.w_gate.weight"] = (cfg.d_ff, d)
            s[p + "ffn.w_up.weight"] = (cfg.d_ff, d)
            s[p + "ffn.w_down.weight"] = (d, cfg.d_ff)
    s["norm.weight"] = (d,)
    if not cfg.tie_embeddings:
        s["lm_head.weight"] = (cfg.n_vocab, d)
    return s


def buffer_shapes(cfg: ModelConfig) -> Dict[str, tuple]:
    s = {}
    if cfg.moe is not None and cfg.moe.bias_update_rate > 0:
        for i in moe_layers(cfg):
            s[f"layers.{i}.ffn.router.selection_bias"] = (layer_n_expert(cfg, i),)
    return s


def init_params(cfg: ModelConfig, gen: torch.Generator, std: float = 0.1, emb_std: float = 0.3,
                router_std: float = 0.3, norm_jitter: float = 0.1, bias_std: float = 0.05):
    """Random float32 parameters and buffers (test init, not a training init)."""
    params, buffers = {}, {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            t = 1.0 + norm_jitter * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif name.endswith("router.weight"):
            t = router_std * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif name in ("tok_embeddings.weight", "lm_head.weight"):
            t = emb_std * torch.randn(shape, generator=gen, dtype=torch.float32)
        else:
            t = std * torch.randn(shape, generator=gen, dtype=torch.float32)
        params[name] = t
    for name, shape in buffer_shapes(cfg).items():
        buffers[name] = bias_std * torch.randn(shape, generator=gen, dtype=torch.float32)
    return params, buffers


def decays(cfg: ModelConfig, name: str, t: Tensor) -> bool:
    """Weight decay: matrices (incl. router and [E, a, b] expert stacks) except the embedding
    (which is also the head when tied); never norms."""
    return t.dim() >= 2 and name != "tok_embeddings.weight"


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def rmsnorm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x: Tensor, theta: float) -> Tensor:
    """x: [B, T, H, D]; HF rotate_half layout, position = index along T."""
    B, T, H, D = x.shape
    half = D // 2
    i = torch.arange(half, dtype=x.dtype)
    freq = theta ** (-2.0 * i / D)  # [half]
    ang = torch.arange(T, dtype=x.dtype)[:, None] * freq[None, :]  # [T, half]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(cfg: ModelConfig, params: Dict[str, Tensor], i: int, h: Tensor, B: int, T: int):
    p = f"layers.{i}.attn."
    H, Hkv, D = cfg.n_head, cfg.n_head_kv, cfg.d_head
    q = (h @ params[p + "wq.weight"].T).view(B, T, H, D)
    k = (h @ params[p + "wk.weight"].T).view(B, T, Hkv, D)
    v = (h @ params[p + "wv.weight"].T).view(B, T, Hkv, D)
    q, k = rope(q, cfg.rope_theta), rope(k, cfg.rope_theta)
    rep = H // Hkv  # query head j uses kv head j // rep
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~causal, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v  # [B, H, T, D]
    o = o.transpose(1, 2).reshape(B * T, H * D)
    return o @ params[p + "wo.weight"].T


def gelu_tanh(u: Tensor) -> Tensor:
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def swiglu(h: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    return (F.silu(h @ w_gate.T) * (h @ w_up.T)) @ w_down.T


def dense_ffn(cfg: ModelConfig, params: Dict[str, Tensor], i: int, h: Tensor) -> Tensor:
    p = f"layers.{i}.ffn."
    if cfg.activation == "swiglu":
        return swiglu(h, params[p + "w_gate.weight"], params[p + "w_up.weight"],
                      params[p + "w_down.weight"])
    return gelu_tanh(h @ params[p + "w_up.weight"].T) @ params[p + "w_down.weight"].T


# --------------------------------------------------------------------------------------------
# MoE
# --------------------------------------------------------------------------------------------


def topk_select(choice: Tensor, k: int):
    """Top-k per row of `choice`, descending, ties -> lower expert index first (stable sort).
    Returns idx [N, k] int64 and margin [N] = choice of k-th selected - (k+1)-th best."""
    order = torch.sort(choice.detach(), dim=-1, descending=True, stable=True)
    idx = order.indices[:, :k]
    vals = order.values
    if k < choice.shape[1]:
        margin = vals[:, k - 1] - vals[:, k]
    else:
        margin = torch.full((choice.shape[0],), float("inf"), dtype=choice.dtype)
    return idx, margin


def capacity(cf: float, N: int, k: int, E: int) -> int:
    return math.ceil(cf * N * k / E)


def capacity_keep(p_sel: Tensor, idx: Tensor, E: int, C: int):
    """kept [N, k] bool: per expert keep the C assignments with the largest p (ties: lower token,
    then lower slot). Also returns the capacity margin: the smallest (p of the C-th kept - p of the
    first dropped) over experts that overflow (inf if none), i.e. how robust the drop decision is."""
    N, k = idx.shape
    kept = torch.zeros(N, k, dtype=torch.bool)
    cap_margin = float("inf")
    p_sel = p_sel.detach()
    for e in range(E):
        assign = [(t, s) for t in range(N) for s in range(k) if idx[t, s].item() == e]
        # Python's sort is stable: sort by (-p, t, s)
        assign.sort(key=lambda ts: (-p_sel[ts].item(), ts[0], ts[1]))
        for t, s in assign[:C]:
            kept[t, s] = True
        if len(assign) > C and C > 0:
            cap_margin = min(cap_margin, p_sel[assign[C - 1]].item() - p_sel[assign[C]].item())
    return kept, cap_margin


def moe_ffn(cfg: ModelConfig, params: Dict[str, Tensor], buffers: Dict[str, Tensor], i: int,
            h: Tensor):
    m = cfg.moe
    p_ = f"layers.{i}.ffn."
    N = h.shape[0]
    E, k = layer_n_expert(cfg, i), m.n_expert_active

    z = h @ params[p_ + "router.weight"].T  # [N, E]
    p = torch.softmax(z, dim=-1) if m.gating == "softmax" else torch.sigmoid(z)
    choice = p.detach()
    if m.bias_update_rate > 0:
        choice = choice + buffers[p_ + "router.selection_bias"].to(p.dtype)
    idx, margin = topk_select(choice, k)  # non-differentiable index choice
    w = p.gather(1, idx)  # the bias never enters the weights; gradient flows through p
    if m.renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    w = w * m.route_scale

    counts = torch.bincount(idx.reshape(-1), minlength=E)  # pre-drop assignment counts
    if m.capacity_factor > 0:
        kept, cap_margin = capacity_keep(p.gather(1, idx), idx, E, capacity(m.capacity_factor, N, k, E))
    else:
        kept, cap_margin = torch.ones(N, k, dtype=torch.bool), float("inf")

    out = torch.zeros_like(h)
    wg, wu, wd = params[p_ + "experts.w_gate"], params[p_ + "experts.w_up"], params[p_ + "experts.w_down"]
    for e in range(E):
        tok, slot = torch.nonzero((idx == e) & kept, as_tuple=True)
        if tok.numel() == 0:
            continue
        y = swiglu(h[tok], wg[e], wu[e], wd[e])  # [n_e, d_model]
        out = out.index_add(0, tok, w[tok, slot][:, None] * y)
    if m.n_expert_shared > 0:
        out = out + swiglu(h, params[p_ + "shared.w_gate.weight"], params[p_ + "shared.w_up.weight"],
                           params[p_ + "shared.w_down.weight"])

    # losses
    f = counts.to(p.dtype) / (N * k)  # constant
    q = p / p.sum(dim=-1, keepdim=True)  # == p for softmax
    P = q.mean(dim=0)
    aux = m.aux_loss_coef * E * (f * P).sum()
    zl = m.z_loss_coef * (torch.logsumexp(z, dim=-1) ** 2).mean()

    info = {
        "topk_idx": idx,
        "topk_weight": w.detach(),
        "kept": kept.to(h.dtype),
        "counts": counts.to(h.dtype),
        "margin": margin,
        "capacity_margin": cap_margin,
    }
    return out, aux, zl, info


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass
class Output:
    logits: Tensor  # [B, T, V]
    ce: Tensor  # scalar
    loss: Tensor  # ce + sum(aux) + sum(z)
    aux: Dict[int, Tensor]  # MoE layer index -> scalar
    z: Dict[int, Tensor]
    routing: Dict[int, dict]


def forward(cfg: ModelConfig, params: Dict[str, Tensor], buffers: Dict[str, Tensor],
            tokens: Tensor, targets: Optional[Tensor] = None) -> Output:
    B, T = tokens.shape
    assert T <= cfg.n_ctx
    x = params["tok_embeddings.weight"][tokens.reshape(-1)]  # [N, d]
    aux, zs, routing = {}, {}, {}
    for i in range(cfg.n_layer):
        p = f"layers.{i}."
        h = rmsnorm(x, params[p + "attn_norm.weight"], cfg.norm_eps)
        x = x + attention(cfg, params, i, h, B, T)
        h = rmsnorm(x, params[p + "ffn_norm.weight"], cfg.norm_eps)
        if is_moe_layer(cfg, i):
            y, aux[i], zs[i], routing[i] = moe_ffn(cfg, params, buffers, i, h)
        else:
            y = dense_ffn(cfg, params, i, h)
        x = x + y
    W = params["tok_embeddings.weight"] if cfg.tie_embeddings else params["lm_head.weight"]
    logits = rmsnorm(x, params["norm.weight"], cfg.norm_eps) @ W.T  # [N, V]
    ce = loss = None
    if targets is not None:
        ce = F.cross_entropy(logits, targets.reshape(-1))
        loss = ce
        for i in aux:
            loss = loss + aux[i] + zs[i]
    return Output(logits.view(B, T, -1), ce, loss, aux, zs, routing)


# --------------------------------------------------------------------------------------------
# Training: AdamW + global-norm clipping + aux-loss-free bias update
# --------------------------------------------------------------------------------------------


def clip_grad_norm(grads: List[Tensor], max_norm: float) -> float:
    """Spec: scale all gradients by max_norm / ||g|| when ||g|| > max_norm (no epsilon)."""
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    if max_norm > 0 and total > max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return total.item()


def bias_update(cfg: ModelConfig, buffers: Dict[str, Tensor], routing: Dict[int, dict]):
    """selection_bias_e += gamma * sign(mean(c) - c_e), c = pre-drop counts of the step."""
    m = cfg.moe
    if m is None or m.bias_update_rate <= 0:
        return
    for i, info in routing.items():
        c = info["counts"]
        name = f"layers.{i}.ffn.router.selection_bias"
        buffers[name] = buffers[name] + m.bias_update_rate * torch.sign(c.mean() - c).to(buffers[name].dtype)


def adamw_trajectory(cfg: ModelConfig, params: Dict[str, Tensor], buffers: Dict[str, Tensor],
                     tokens: Tensor, targets: Tensor, lr: float, beta1: float, beta2: float,
                     eps: float, weight_decay: float, grad_clip: float, steps: int):
    """`steps` AdamW steps on one fixed batch, constant lr. Returns (losses before each step,
    final params, final buffers, min routing margin seen, min capacity margin seen, per-step
    routing info)."""
    params = {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}
    buffers = {n: t.detach().clone() for n, t in buffers.items()}
    decay = [t for n, t in params.items() if decays(cfg, n, t)]
    no_decay = [t for n, t in params.items() if not decays(cfg, n, t)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    losses, min_margin, min_cap, history = [], float("inf"), float("inf"), []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = forward(cfg, params, buffers, tokens, targets)
        out.loss.backward()
        losses.append(out.loss.item())
        history.append(out.routing)
        for info in out.routing.values():
            min_margin = min(min_margin, info["margin"].min().item())
            min_cap = min(min_cap, info["capacity_margin"])
        clip_grad_norm([t.grad for t in params.values() if t.grad is not None], grad_clip)
        opt.step()
        bias_update(cfg, buffers, out.routing)
    return losses, params, buffers, min_margin, min_cap, history
