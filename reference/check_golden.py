"""Check the golden files against a float32 run of the peer, and show that they catch bugs.

    python reference/check_golden.py                 # every case, float32 vs the f64 goldens
    python reference/check_golden.py --mutations     # also: deliberately broken variants must fail

For each case this loads config.toml / weights / inputs, recomputes everything in float32 with
reference/model.py and compares with expected.safetensors under the tolerances of MANIFEST.json,
using the same rules the Rust tests are meant to use:

* logits, loss/ce/aux/z, trajectory, bias_after:  |x - ref| <= atol + rtol * |ref|
* grad.*:  max|g - ref| <= atol + rtol * max|ref|   (per tensor)
* router.*: topk_idx / kept exact, topk_weight and margin within the routing tolerance, on
  tokens whose reference margin >= min_margin; counts exact when no token is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model as M  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def load_case(name):
    d = GOLDEN / name
    conf = tomllib.loads((d / "config.toml").read_text())
    cfg = M.ModelConfig.from_dict(conf["model"])
    weights = load_file(str(d / "weights.safetensors"))
    params = {n: weights[n] for n in M.param_shapes(cfg)}
    buffers = {n: weights[n] for n in M.buffer_shapes(cfg)}
    assert set(weights) == set(params) | set(buffers), "unexpected tensors in weights"
    inp = load_file(str(d / "inputs.safetensors"))
    exp = load_file(str(d / "expected.safetensors"))
    return cfg, conf["golden"], params, buffers, inp["inputs"], inp["targets"], exp


def run(cfg, hp, params, buffers, tokens, targets, dtype=torch.float32):
    """Everything the goldens hold, recomputed with the peer in `dtype`."""
    p = {n: t.to(dtype).requires_grad_(True) for n, t in params.items()}
    b = {n: t.to(dtype) for n, t in buffers.items()}
    out = M.forward(cfg, p, b, tokens, targets)
    out.loss.backward()
    got = {"logits": out.logits.detach(), "loss": out.loss.detach().reshape(1),
           "ce": out.ce.detach().reshape(1)}
    for i, r in out.routing.items():
        got[f"aux.{i}"] = out.aux[i].detach().reshape(1)
        got[f"z.{i}"] = out.z[i].detach().reshape(1)
        for key in ("topk_idx", "topk_weight", "kept", "counts", "margin"):
            got[f"router.{i}.{key}"] = r[key]
    for n, t in p.items():
        got[f"grad.{n}"] = torch.zeros_like(t) if t.grad is None else t.grad.detach()
    train = {k: hp[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip", "steps")}
    losses, _, b_after, _, _, _ = M.adamw_trajectory(cfg, p, b, tokens, targets, **train)
    got["trajectory"] = torch.tensor(losses, dtype=dtype)
    for n, t in b_after.items():
        got["bias_after." + n.split(".")[1]] = t
    return got


def compare(got, exp, tol, min_margin):
    """Returns {key: (deviation, allowed)} and the list of failing keys."""
    res, fails = {}, []

    def close(key, kind, scale_by_max=False, mask=None):
        g, e = got[key].double(), exp[key].double()
        if mask is not None:
            g, e = g[mask], e[mask]
        t = tol[kind]
        if g.numel() == 0:
            return
        finite = torch.isfinite(e)
        if not torch.equal(finite, torch.isfinite(g)) or not torch.equal(g[~finite], e[~finite]):
            res[key] = (math.inf, 0.0)
            fails.append(key)
            return
        g, e = g[finite], e[finite]
        dev = (g - e).abs()
        if scale_by_max:
            allowed = t["atol"] + t["rtol"] * e.abs().max().item()
            ok, worst = dev.max().item() <= allowed, dev.max().item()
        else:
            allowed_t = t["atol"] + t["rtol"] * e.abs()
            ok, worst, allowed = bool((dev <= allowed_t).all()), dev.max().item(), allowed_t.min().item()
        res[key] = (worst, allowed)
        if not ok:
            fails.append(key)

    for key in exp:
        if got.get(key) is None or (got[key].shape != exp[key].shape):
            res[key] = (math.inf, 0.0)
            fails.append(key)
            continue
        if key == "logits":
            close(key, "logits")
        elif key in ("loss", "ce") or key.startswith(("aux.", "z.")):
            close(key, "loss")
        elif key.startswith("grad."):
            close(key, "grads", scale_by_max=True)
        elif key == "trajectory":
            close(key, "trajectory")
        elif key.startswith("bias_after."):
            close(key, "bias_after")
        elif key.startswith("router."):
            i = key.split(".")[1]
            ok_tok = exp[f"router.{i}.margin"] >= min_margin
            if key.endswith(("topk_idx", "kept")):
                same = torch.equal(got[key][ok_tok], exp[key][ok_tok])
                res[key] = (0.0 if same else math.inf, 0.0)
                if not same:
                    fails.append(key)
            elif key.endswith("counts"):
                if bool(ok_tok.all()):
                    same = torch.equal(got[key].double(), exp[key].double())
                    res[key] = (0.0 if same else math.inf, 0.0)
                    if not same:
                        fails.append(key)
            else:  # topk_weight, margin
                close(key, "routing", mask=ok_tok)
        else:
            raise KeyError(key)
    return res, fails


# ----------------------------------------------------------------------------------------------
# Mutations: deliberately wrong variants that the goldens must reject.
# ----------------------------------------------------------------------------------------------


def _rope_interleaved(x, theta):
    B, T, H, D = x.shape
    i = torch.arange(D // 2, dtype=x.dtype)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * (theta ** (-2.0 * i / D))[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


def _flip_sign_rope(x, theta):
    """rotate_half with the rotation direction flipped (angle -a)."""
    B, T, H, D = x.shape
    half = D // 2
    i = torch.arange(half, dtype=x.dtype)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * (theta ** (-2.0 * i / D))[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def _mutations():
    """name -> (applies(cfg), context manager-ish (apply, undo))."""
    orig = {k: getattr(M, k) for k in ("rope", "rmsnorm", "capacity", "decays", "gelu_tanh",
                                       "clip_grad_norm", "attention", "moe_ffn")}

    def patch(**kw):
        def apply():
            for k, v in kw.items():
                setattr(M, k, v)

        return apply

    muts = {
        "rope_interleaved_pairs": (lambda c: True, patch(rope=_rope_interleaved), None),
        "rope_rotation_sign": (lambda c: True, patch(rope=_flip_sign_rope), None),
        "rmsnorm_without_weight": (lambda c: True, patch(rmsnorm=lambda x, w, eps: orig["rmsnorm"](x, torch.ones_like(w), eps)), None),
        "rmsnorm_eps_outside_sqrt": (lambda c: c.norm_eps >= 1e-3, patch(rmsnorm=lambda x, w, eps: x / (torch.sqrt((x * x).mean(-1, keepdim=True)) + eps) * w), None),
        "gelu_erf_instead_of_tanh": (lambda c: c.activation == "gelu", patch(gelu_tanh=lambda u: F.gelu(u)), None),
        "rope_theta_hardcoded_1e4": (lambda c: c.rope_theta != 10000.0, patch(rope=lambda x, theta: orig["rope"](x, 10000.0)), None),
        "gqa_head_mapping_modulo": (lambda c: c.n_head != c.n_head_kv, None, "gqa"),
        "capacity_plus_one": (lambda c: c.moe is not None and c.moe.capacity_factor > 0, patch(capacity=lambda cf, N, k, E: orig["capacity"](cf, N, k, E) + 1), None),
        "renormalize_flipped": (lambda c: c.moe is not None and c.moe.n_expert_active > 1, None, "renorm"),
        "route_scale_ignored": (lambda c: c.moe is not None and c.moe.route_scale != 1.0, None, "route_scale"),
        "aux_coef_ignored_E": (lambda c: c.moe is not None and c.moe.aux_loss_coef > 0, None, "auxE"),
        "bias_update_sign_flipped": (lambda c: c.moe is not None and c.moe.bias_update_rate > 0, None, "bias_sign"),
        # backward-only bugs (forward unchanged): only the grad.* / trajectory checks can see them
        "renorm_denominator_detached": (lambda c: c.moe is not None and c.moe.renormalize and c.moe.n_expert_active > 1,
                                        patch(moe_ffn=_patched_moe(RENORM_DETACHED)), None),
        "dropped_assignment_gets_gradient": (lambda c: c.moe is not None and c.moe.capacity_factor > 0,
                                             patch(moe_ffn=_patched_moe(DROPPED_GRAD)), None),
        "aux_uses_p_not_q_sigmoid": (lambda c: c.moe is not None and c.moe.gating == "sigmoid",
                                     patch(moe_ffn=_patched_moe(AUX_P)), None),
        "aux_f_differentiable_via_p": (lambda c: c.moe is not None and c.moe.aux_loss_coef > 0,
                                       patch(moe_ffn=_patched_moe(F_GRAD)), None),
        "selection_bias_ignored": (lambda c: c.moe is not None and c.moe.bias_update_rate > 0,
                                   patch(moe_ffn=_patched_moe(BIAS_IGNORED)), None),
        "selection_bias_enters_weights": (lambda c: c.moe is not None and c.moe.bias_update_rate > 0,
                                          patch(moe_ffn=_patched_moe(BIAS_IN_W)), None),
        "weight_decay_on_embeddings": (lambda c: True, patch(decays=lambda c, n, t: t.dim() >= 2), None),
        "no_grad_clip": (lambda c: True, patch(clip_grad_norm=lambda g, m: orig["clip_grad_norm"](g, 0.0)), None),
    }
    return orig, muts


RENORM_DETACHED = [("w = w / w.sum(dim=-1, keepdim=True)", "w = w / w.sum(dim=-1, keepdim=True).detach()")]
DROPPED_GRAD = [
    ("torch.nonzero((idx == e) & kept, as_tuple=True)", "torch.nonzero(idx == e, as_tuple=True)"),
    ("out = out.index_add(0, tok, w[tok, slot][:, None] * y)",
     "c = w[tok, slot][:, None] * y; kk = kept[tok, slot][:, None].to(c.dtype); "
     "out = out.index_add(0, tok, kk * c + (1 - kk) * (c - c.detach()))"),
]
BIAS_IGNORED = [("choice = choice + buffers[", "choice = choice + 0 * buffers[")]
BIAS_IN_W = [("w = p.gather(1, idx)", "w = (p + buffers[p_ + 'router.selection_bias']).gather(1, idx)")]
AUX_P = [("P = q.mean(dim=0)", "P = p.mean(dim=0)")]
# f_e made "soft": same value, but gradient as if f were the mean of the selected p's indicator
F_GRAD = [("f = counts.to(p.dtype) / (N * k)",
           "f = counts.to(p.dtype) / (N * k); f = f + (p - p.detach()).mean(0)")]


def _patched_moe(replacements):
    """M.moe_ffn with its source text edited (keeps model.py free of bug switches)."""
    import inspect
    import textwrap
    src = textwrap.dedent(inspect.getsource(M.moe_ffn))
    for a, b in replacements:
        assert a in src, a
        src = src.replace(a, b)
    ns = dict(M.__dict__)
    exec(compile(src, "<mutated moe_ffn>", "exec"), ns)
    return ns["moe_ffn"]


def _attention_modulo(cfg, params, i, h, B, T):
    """GQA bug: query head j uses kv head j % n_head_kv (instead of j // (n_head/n_head_kv))."""
    p = f"layers.{i}.attn."
    H, Hkv, D = cfg.n_head, cfg.n_head_kv, cfg.d_head
    q = M.rope((h @ params[p + "wq.weight"].T).view(B, T, H, D), cfg.rope_theta)
    k = M.rope((h @ params[p + "wk.weight"].T).view(B, T, Hkv, D), cfg.rope_theta)
    v = (h @ params[p + "wv.weight"].T).view(B, T, Hkv, D)
    k, v = k.repeat(1, 1, H // Hkv, 1), v.repeat(1, 1, H // Hkv, 1)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B * T, H * D)
    return o @ params[p + "wo.weight"].T


def run_mutation(kind, cfg, hp, params, buffers, tokens, targets):
    import copy
    cfg = copy.deepcopy(cfg)
    if kind == "gqa":
        M.attention = _attention_modulo
    elif kind == "renorm":
        cfg.moe.renormalize = not cfg.moe.renormalize
    elif kind == "route_scale":
        cfg.moe.route_scale = 1.0
    elif kind == "auxE":
        # aux without the factor E: equivalent to scaling the coefficient by 1/E
        cfg.moe.aux_loss_coef = cfg.moe.aux_loss_coef / cfg.moe.n_expert
    elif kind == "bias_sign":
        orig = M.bias_update

        def flipped(c, b, r):
            before = {n: t.clone() for n, t in b.items()}
            orig(c, b, r)
            for n in b:
                b[n] = 2 * before[n] - b[n]

        M.bias_update = flipped
    return run(cfg, hp, params, buffers, tokens, targets, torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mutations", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    manifest = json.loads((GOLDEN / "MANIFEST.json").read_text())
    all_ok = True
    summary = {}
    for case in manifest["cases"]:
        name = case["name"]
        cfg, hp, params, buffers, tokens, targets, exp = load_case(name)
        tol, mm = case["tolerances"], case["min_margin"]
        got = run(cfg, hp, params, buffers, tokens, targets, torch.float32)
        res, fails = compare(got, exp, tol, mm)
        groups = {}
        for key, (dev, allowed) in res.items():
            g = ("grad(rel max)" if key.startswith("grad.") else key.split(".")[0] if not key.startswith("router.")
                 else "router." + key.split(".")[-1])
            if key.startswith("grad."):
                dev = dev / max(exp[key].abs().max().item(), 1e-30)
            groups[g] = max(groups.get(g, 0.0), dev)
        print(f"{name}: {'OK' if not fails else 'FAIL ' + str(fails)}")
        print("   f32 max deviation: " + ", ".join(f"{g} {d:.2e}" for g, d in groups.items()))
        if args.verbose:
            for key, (dev, allowed) in res.items():
                print(f"     {key}: {dev:.3e} (allowed {allowed:.3e})")
        all_ok &= not fails
        summary[name] = groups

    if args.mutations:
        print("\nmutations (each must FAIL on every case where it applies):")
        orig, muts = _mutations()
        for mname, (applies, apply, kind) in muts.items():
            line = []
            for case in manifest["cases"]:
                cfg, hp, params, buffers, tokens, targets, exp = load_case(case["name"])
                if not applies(cfg):
                    continue
                try:
                    if apply:
                        apply()
                    got = run_mutation(kind, cfg, hp, params, buffers, tokens, targets)
                finally:
                    for k, v in orig.items():
                        setattr(M, k, v)
                    M.bias_update = _ORIG_BIAS_UPDATE
                _, fails = compare(got, exp, case["tolerances"], case["min_margin"])
                caught = bool(fails)
                all_ok &= caught
                first = sorted(set(f.split(".")[0] for f in fails))
                line.append(f"{case['name']}:{'caught' if caught else 'MISSED'}({','.join(first)})")
            print(f"  {mname}: " + "  ".join(line))
    print("\nALL OK" if all_ok else "\nSOME CHECKS FAILED")
    sys.exit(0 if all_ok else 1)


_ORIG_BIAS_UPDATE = M.bias_update

if __name__ == "__main__":
    main()
