"""The original ``workload`` section -> ``[workload]`` with a shared arrival and client shares.

The original draws one arrival stream for all client profiles: each arrival picks a profile
with probability ``weight / sum(weights)`` and waits a gap drawn from that profile's
``inter_arrival_time_dist_config``. Here that is ``[workload].arrival`` split by per-client
``share``. The stream's gaps are therefore the weight-mixture of the profiles' gap laws:

* all profiles Exponential with one rate -> ``poisson`` (exact);
* all profiles Constant with one value -> ``constant`` (exact);
* anything else -> ``gamma`` with the mixture's mean and coefficient of variation
  (approximated: the first two moments match, the shape does not).

Conversations: a profile's request starts a conversation with probability
``conversational_probability``; a conversation then continues after each turn with
probability :data:`CONTINUE_PROB`, up to :data:`MAX_TURNS` turns. So the number of turns T of
a session is::

    P(T = 1) = (1 - c) + c * (1 - q)
    P(T = k) = c * q**(k-1) * (1 - q)        for 1 < k < MAX_TURNS
    P(T = MAX_TURNS) = c * q**(MAX_TURNS-1)  (the cap)

with c = conversational_probability and q = CONTINUE_PROB, written as an ``empirical`` turns
distribution with exactly these weights.
"""

from __future__ import annotations

import math

from oracle.errors import Problems, ScenarioError
from oracle.legacy import dists as D
from oracle.legacy.common import (APPROXIMATED, DROPPED, NOTE, Context, fmt, integer, join, mapping, number,
                                  string)

CONTINUE_PROB = 0.7     # the original's chance that a conversation goes on after a turn
MAX_TURNS = 10          # the original's cap on turns per conversation
MAX_CV = 10.0           # gamma arrivals: cap on the coefficient of variation (infinite-variance gaps)

_PROFILE_KEYS = ("profile_name", "weight", "inter_arrival_time_dist_config", "prompt_tokens_dist_config",
                 "max_output_tokens_dist_config", "conversational_probability",
                 "follow_up_inter_arrival_time_dist_config", "streaming_response_probability")
WORKLOAD_KEYS = ("total_duration", "total_requests_to_generate", "client_profiles", "load_balancing_strategy")


def turns_weights(c: float, q: float = CONTINUE_PROB, cap: int = MAX_TURNS) -> list[float]:
    """P(T = 1..cap) of a session's turn count (see the module docstring)."""
    w = [c * q ** (k - 1) * (1 - q) for k in range(1, cap)] + [c * q ** (cap - 1)]
    w[0] += 1 - c
    return w


def convert_workload(raw: dict, ctx: Context, *, path: str = "workload") -> tuple[dict, dict]:
    """Return ``([workload] table, {"duration_s": ..., "num_requests": ...})``."""
    wl = mapping(raw, path)
    ctx.unknown_keys(wl, WORKLOAD_KEYS, path, "workload")
    problems = Problems()   # every problem of the workload, raised together
    sim = {}
    with problems.guard():
        total = number(wl, "total_duration", path, lo=0.0, lo_open=True)
        if total is not None:
            sim["duration_s"] = total
            ctx.origin("simulation.duration_s", join(path, "total_duration"))
    with problems.guard():
        n = integer(wl, "total_requests_to_generate", path, lo=1)
        if n is not None:
            sim["num_requests"] = n
            ctx.origin("simulation.num_requests", join(path, "total_requests_to_generate"))
    profiles = wl.get("client_profiles")
    ppath = join(path, "client_profiles")
    if not isinstance(profiles, list) or not profiles:
        problems.add(ScenarioError("is required: a non-empty list of client profiles", key=ppath))
        problems.raise_if_any()

    clients, gap_laws, shares = [], [], []
    names: set[str] = set()
    for i, prof in enumerate(profiles):
        with problems.guard():
            kp = join(ppath, i)
            prof = mapping(prof, kp)
            weight = law = None
            with problems.guard():
                weight = number(prof, "weight", kp, default=1.0, lo=0.0)
            with problems.guard():
                law = D.parse_law(prof.get("inter_arrival_time_dist_config"),
                                  join(kp, "inter_arrival_time_dist_config")) \
                    if "inter_arrival_time_dist_config" in prof else None
                if law is None:
                    raise ScenarioError("is required: the gap between arrivals of this profile",
                                        key=join(kp, "inter_arrival_time_dist_config"))
            if weight == 0:
                ctx.note(DROPPED, f"client profile {prof.get('profile_name', i)!r} has weight 0: it never gets "
                                  "a request, so it is left out", origin=join(kp, "weight"))
                continue
            tk = f"workload.clients.{len(clients)}"
            client = _convert_profile(prof, kp, tk, ctx, names)
            if weight is None or law is None:
                continue
            clients.append(client)
            ctx.origin(f"{tk}.share", join(kp, "weight"))
            ctx.origin(tk, kp)
            gap_laws.append(law)
            shares.append(weight)
    problems.raise_if_any()
    if not clients:
        raise ScenarioError("every client profile has weight 0; at least one must get requests", key=ppath)
    total_w = sum(shares)
    for client, w in zip(clients, shares):
        client["share"] = w / total_w
    ctx.origin("workload.clients", ppath)
    ctx.origin("workload", path)
    out = {"arrival": _shared_arrival(gap_laws, [w / total_w for w in shares], ctx, ppath), "clients": clients}
    ctx.origin("workload.arrival", join(ppath, "0.inter_arrival_time_dist_config"))
    return out, sim


def _convert_profile(prof: dict, kp: str, tk: str, ctx: Context, names: set[str]) -> dict:
    ctx.unknown_keys(prof, _PROFILE_KEYS, kp, tk)
    name = string(prof, "profile_name", kp, default=None) or f"profile{tk.rsplit('.', 1)[-1]}"
    base, j = name, 2
    while name in names:
        name, j = f"{base}-{j}", j + 1
    if name != base:
        ctx.note(NOTE, f"duplicate profile name {base!r} renamed {name!r}", toml_key=f"{tk}.name",
                 origin=join(kp, "profile_name"))
    names.add(name)
    client: dict = {"name": name, "share": 1.0}   # share: set by the caller
    problems = Problems()
    for src, dst in (("prompt_tokens_dist_config", "prompt_tokens"),
                     ("max_output_tokens_dist_config", "output_tokens")):
        with problems.guard():
            if src not in prof:
                raise ScenarioError("is required", key=join(kp, src))
            client[dst] = to_dist(prof[src], join(kp, src), f"{tk}.{dst}", ctx, integer=True)
            ctx.origin(f"{tk}.{dst}", join(kp, src))
    c = 0.0
    with problems.guard():
        c = number(prof, "conversational_probability", kp, default=0.0, lo=0.0, hi=1.0)
    with problems.guard():
        follow = prof.get("follow_up_inter_arrival_time_dist_config")
        if c > 0:
            conv: dict = {"turns": {"dist": "empirical", "values": list(range(1, MAX_TURNS + 1)),
                                    "weights": [float(f"{w:.12g}") for w in turns_weights(c)]}}
            ctx.note(NOTE, f"conversational_probability = {fmt(c)}: turns per session is the original's "
                           f"'continue with probability {CONTINUE_PROB} after each turn, at most {MAX_TURNS} turns', "
                           f"mixed with one-turn requests (weights of 1..{MAX_TURNS} turns below, exact); "
                           "follow-ups are sent after the previous answer plus the think time",
                     toml_key=f"{tk}.conversation", origin=join(kp, "conversational_probability"))
            ctx.note(NOTE, "follow-up prompts here carry the whole history (system prompt, earlier prompts and "
                           "answers) plus a new user message drawn from prompt_tokens, so they are longer than the "
                           "original's and hit the prefix cache for real", toml_key=f"{tk}.conversation")
            if follow is not None:
                conv["think_time_s"] = to_dist(follow, join(kp, "follow_up_inter_arrival_time_dist_config"),
                                               f"{tk}.conversation", ctx, integer=False)
                ctx.origin(f"{tk}.conversation.think_time_s", join(kp, "follow_up_inter_arrival_time_dist_config"))
            else:
                ctx.note(NOTE, "no follow_up_inter_arrival_time_dist_config: this project's default think time "
                               "(5 s) is used", toml_key=f"{tk}.conversation")
            client["conversation"] = conv
            ctx.origin(f"{tk}.conversation", join(kp, "conversational_probability"))
        elif follow is not None:
            ctx.note(DROPPED, "follow_up_inter_arrival_time_dist_config is unused: conversational_probability is 0",
                     toml_key=tk, origin=join(kp, "follow_up_inter_arrival_time_dist_config"))
        if "streaming_response_probability" in prof:
            ctx.note(DROPPED, "streaming_response_probability: every request is measured as streamed here "
                              "(TTFT, TPOT and ITL exist for all requests)", toml_key=tk,
                     origin=join(kp, "streaming_response_probability"))
    problems.raise_if_any()
    return client


def to_dist(cfg, path: str, tk: str, ctx: Context, *, integer: bool) -> dict:
    """One original distribution config -> a ``{ dist = ... }`` table (notes go above ``tk``)."""
    law = D.parse_law(cfg, path)
    for k in law.unknown:
        ctx.note(DROPPED, f"unknown parameter {k!r} ignored", toml_key=tk, origin=join(path, k))
    if law.is_int is False and integer:
        ctx.note(NOTE, "is_int = false: token counts are whole numbers here (draws are rounded)",
                 toml_key=tk, origin=join(path, "is_int"))
    if law.is_int and not integer:
        ctx.note(APPROXIMATED, "is_int = true: times are not rounded to whole seconds here", toml_key=tk,
                 origin=join(path, "is_int"))
    t = law.type
    p = {k: _tidy(v, integer) for k, v in law.params.items()}
    out: dict
    if t == "Constant":
        out = {"dist": "constant", "value": p["value"]}
    elif t == "Exponential":
        out = {"dist": "exponential", "mean": 1.0 / p["rate"]}
    elif t == "Uniform":
        out = {"dist": "uniform", "min": p["low"], "max": p["high"]}
        if integer:
            ctx.note(NOTE, "Uniform token counts here are whole numbers from min to max, both included",
                     toml_key=tk, origin=path)
    elif t == "Normal":
        out = {"dist": "normal", "mean": p["mean"], "std": p["std"]}
    elif t == "LogNormal":
        out = {"dist": "lognormal", "median": math.exp(p["mu"]), "sigma": p["sigma"]}
        ctx.note(NOTE, f"LogNormal: the original's mean = {fmt(p['mu'])} is mu of ln X; here median = exp(mu) "
                       f"= {fmt(math.exp(p['mu']))} with the same sigma (same law)", toml_key=tk, origin=path)
    else:
        out = _empirical(law, path, tk, ctx, integer=integer)
    if law.lo is not None:
        out["min"] = _tidy(law.lo, integer)
    if law.hi is not None:
        out["max"] = _tidy(law.hi, integer)
    if law.lo is not None or law.hi is not None:
        ctx.note(NOTE, "min/max applied as clipping bounds", toml_key=tk, origin=path)
    return out


def _tidy(v: float, integer: bool) -> float | int:
    """Whole numbers of token-count distributions as integers (reads better; same value)."""
    return int(v) if integer and float(v).is_integer() else v


def _empirical(law: D.Law, path: str, tk: str, ctx: Context, *, integer: bool) -> dict:
    pairs = D.discretize(law)
    merged: dict[float, float] = {}
    for v, w in pairs:
        v = float(max(round(v), 1)) if integer else float(f"{max(v, 0.0):.6g}")
        merged[v] = merged.get(v, 0.0) + w
    values = sorted(merged)
    weights = [merged[v] for v in values]
    out: dict = {"dist": "empirical", "values": [int(v) for v in values] if integer else values}
    if len(set(weights)) > 1:
        out["weights"] = [float(f"{w:.9g}") for w in weights]
    exact_mean = D.moments(law)[0]
    approx_mean = sum(v * w for v, w in zip(values, weights)) / sum(weights)
    if D.is_exactly_discrete(law):
        ctx.note(NOTE, f"{D.describe(law)} written as an empirical distribution (exact)", toml_key=tk, origin=path)
    else:
        ctx.note(APPROXIMATED, f"{D.describe(law)} has no equivalent here: written as {D.NUM_QUANTILES} "
                               f"equal-probability quantiles (mean {fmt(approx_mean)} vs exact "
                               f"{fmt(exact_mean) if math.isfinite(exact_mean) else 'infinite'}; the tail "
                               f"beyond the {100 - 50 / D.NUM_QUANTILES:g}th percentile is cut)",
                 toml_key=tk, origin=path)
    return out


def _shared_arrival(laws: list[D.Law], shares: list[float], ctx: Context, ppath: str) -> dict:
    key = "workload.arrival"
    origin = join(ppath, "*.inter_arrival_time_dist_config")
    for law in laws:
        if law.lo is not None or law.hi is not None:
            ctx.note(DROPPED, "min/max of an inter-arrival distribution are ignored", toml_key=key, origin=origin)
            break
    first = laws[0]
    same = all(law.type == first.type and law.params == first.params and law.components == first.components
               for law in laws)
    desc = D.describe(first) if same else "the weight-mixture of " + ", ".join(D.describe(x) for x in laws)
    if same and first.type == "Exponential":
        ctx.note(NOTE, f"one arrival stream shared by all clients, as in the original: {desc} gaps = "
                       f"Poisson arrivals at {fmt(first.params['rate'])}/s (exact); each arrival picks a client "
                       "with probability share", toml_key=key, origin=origin)
        return {"process": "poisson", "rate": first.params["rate"]}
    if same and first.type == "Constant":
        v = first.params["value"]
        if v <= 0:
            raise ScenarioError(f"must be > 0 for an inter-arrival gap, got {v:g}",
                                key=join(ppath, "0.inter_arrival_time_dist_config.value"))
        ctx.note(NOTE, f"one arrival stream shared by all clients: {desc} gaps = constant rate {fmt(1 / v)}/s "
                       "(exact)", toml_key=key, origin=origin)
        return {"process": "constant", "rate": 1.0 / v}
    mean = sum(s * D.moments(x)[0] for s, x in zip(shares, laws))
    second = sum(s * (D.moments(x)[1] + D.moments(x)[0] ** 2) for s, x in zip(shares, laws))
    if not math.isfinite(mean) or mean <= 0:
        raise ScenarioError(f"the mean gap between arrivals ({desc}) must be finite and > 0, got {fmt(mean)}",
                            key=origin)
    var = max(second - mean * mean, 0.0)
    cv = math.sqrt(var) / mean if math.isfinite(var) else math.inf
    if cv == 0:
        ctx.note(APPROXIMATED, f"{desc} gaps have no spread: constant rate {fmt(1 / mean)}/s", toml_key=key,
                 origin=origin)
        return {"process": "constant", "rate": 1.0 / mean}
    extra = ""
    if cv > MAX_CV:
        extra = f"; the CV ({'infinite' if not math.isfinite(cv) else fmt(cv)}) is capped at {MAX_CV:g}"
        cv = MAX_CV
    ctx.note(APPROXIMATED, f"{desc} gaps -> gamma arrivals with the same mean gap ({fmt(mean)} s, rate "
                           f"{fmt(1 / mean)}/s) and coefficient of variation {fmt(cv)}{extra}",
             toml_key=key, origin=origin)
    return {"process": "gamma", "rate": 1.0 / mean, "cv": cv}
