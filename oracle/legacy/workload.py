"""The original ``workload`` section -> ``[workload]`` with a shared arrival and client shares.

The original draws one arrival stream for all client profiles: each arrival picks a profile
with probability ``weight / sum(weights)`` and waits a gap drawn from that profile's
``inter_arrival_time_dist_config``. Here that is ``[workload].arrival`` split by per-client
``share``. The stream's gaps are therefore the weight-mixture of the profiles' gap laws:

* all profiles Exponential with one rate -> ``poisson`` (exact);
* all profiles Constant with one value -> ``constant`` (exact);
* anything else -> ``gamma`` with the mixture's mean and coefficient of variation
  (approximated: the first two moments match, the shape does not).

All arrivals start one gap after t = 0 (``first_arrival = "gap"``), as in the original.

Conversations: a profile's request starts a conversation with probability
``conversational_probability``; a conversation that starts always gets a second turn, and
after each follow-up it continues with probability :data:`CONTINUE_PROB`, up to
``workload.max_turns_per_session`` turns (M, default :data:`MAX_TURNS`). So the number of
turns T of a session is::

    P(T = 1) = 1 - c
    P(T = k) = c * (1 - q) * q**(k-2)        for 2 <= k < M
    P(T = M) = c * q**(M-2)                  (the cap)

with c = conversational_probability and q = CONTINUE_PROB, written as an ``empirical`` turns
distribution with exactly these weights. A follow-up arrives ``follow_up_inter_arrival_time``
after the previous turn's *arrival* (``think_from = "arrival"``), finished or not, and no
arrival comes at or after the end of the workload. Its prompt is the previous prompt + the
previous turn's output (``max_output``, always generated in full) + a new input drawn from the
profile's ``prompt_tokens_dist_config``: this project's chat history, exactly.

Shared prefixes (``prefix_patterns``, in ``workload`` or in a profile; see
:func:`parse_prefix_patterns`): each pattern is a prompt prefix that a share of the profile's
requests starts with. A profile with patterns becomes one client per pattern (``share`` =
profile share x pattern probability, ``system_prompt_tokens`` = the prefix length,
``system_prompt_pool`` = the pattern name, so profiles naming the same pattern share it) plus
one without a prefix for the remaining probability. The prefix comes in front of the drawn
prompt length.
"""

from __future__ import annotations

import math

from oracle.errors import Problems, ScenarioError
from oracle.legacy import dists as D
from oracle.legacy.common import (APPROXIMATED, DROPPED, NOTE, Context, boolean, first_key, fmt, integer, join,
                                  mapping, number, string, type_name)

CONTINUE_PROB = 0.7     # the original's chance that a conversation goes on after a follow-up
MAX_TURNS = 10          # cap on turns per conversation when workload.max_turns_per_session is not given
MAX_CV = 10.0           # gamma arrivals: cap on the coefficient of variation (infinite-variance gaps)
ABSURD_TOKENS = 2**29   # a token law whose median is this big cannot be simulated (nor by the original)

_PROFILE_KEYS = ("profile_name", "weight", "inter_arrival_time_dist_config", "prompt_tokens_dist_config",
                 "max_output_tokens_dist_config", "conversational_probability",
                 "follow_up_inter_arrival_time_dist_config", "streaming_response_probability", "prefix_patterns")
WORKLOAD_KEYS = ("total_duration", "total_requests_to_generate", "client_profiles", "load_balancing_strategy",
                 "max_turns_per_session", "generate_prompt_tokens", "prefix_patterns")


def turns_weights(c: float, q: float = CONTINUE_PROB, cap: int = MAX_TURNS) -> list[float]:
    """P(T = 1..cap) of a session's turn count (see the module docstring)."""
    if cap == 1:
        return [1.0]
    w = [1 - c] + [c * (1 - q) * q ** (k - 2) for k in range(2, cap)] + [c * q ** (cap - 2)]
    return w


def mean_turns(c: float, q: float = CONTINUE_PROB, cap: int = MAX_TURNS) -> float:
    return sum((k + 1) * w for k, w in enumerate(turns_weights(c, q, cap)))


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
    cap = MAX_TURNS
    with problems.guard():
        given = integer(wl, "max_turns_per_session", path, lo=1)
        if given is None:
            ctx.note(NOTE, f"no workload.max_turns_per_session: conversations are capped at {MAX_TURNS} turns",
                     toml_key="workload.clients")
        else:
            cap = given
    gen_tokens = None
    with problems.guard():
        gen_tokens = boolean(wl, "generate_prompt_tokens", path)
    shared_patterns = None
    if wl.get("prefix_patterns") is not None:
        with problems.guard():
            shared_patterns = parse_prefix_patterns(wl["prefix_patterns"], join(path, "prefix_patterns"))
    profiles = wl.get("client_profiles")
    ppath = join(path, "client_profiles")
    if not isinstance(profiles, list) or not profiles:
        problems.add(ScenarioError("is required: a non-empty list of client profiles", key=ppath))
        problems.raise_if_any()

    clients, gap_laws, shares, patterns = [], [], [], []
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
            own = shared_patterns
            if prof.get("prefix_patterns") is not None:
                with problems.guard():
                    own = parse_prefix_patterns(prof["prefix_patterns"], join(kp, "prefix_patterns"))
            client = _convert_profile(prof, kp, tk, ctx, names, cap)
            if weight is None or law is None:
                continue
            clients.append(client)
            ctx.origin(f"{tk}.share", join(kp, "weight"))
            ctx.origin(tk, kp)
            gap_laws.append(law)
            shares.append(weight)
            patterns.append((own, join(kp, "prefix_patterns") if prof.get("prefix_patterns") is not None
                             else join(path, "prefix_patterns")))
    problems.raise_if_any()
    if not clients:
        raise ScenarioError("every client profile has weight 0; at least one must get requests", key=ppath)
    total_w = sum(shares)
    for client, w in zip(clients, shares):
        client["share"] = w / total_w
    ctx.origin("workload.clients", ppath)
    ctx.origin("workload", path)
    arrival = _shared_arrival(gap_laws, [w / total_w for w in shares], ctx, ppath)
    arrival["first_arrival"] = "gap"
    ctx.note(NOTE, "first_arrival = \"gap\": the first request arrives one inter-arrival gap after t = 0, as in "
                   "the original (constant gaps of 2 s: 2, 4, 6, ... s)", toml_key="workload.arrival")
    ctx.origin("workload.arrival", join(ppath, "0.inter_arrival_time_dist_config"))
    if any(p for p, _ in patterns):
        clients = _split_by_patterns(clients, patterns, gen_tokens, ctx, path)
    elif gen_tokens is not None:
        ctx.note(NOTE, f"generate_prompt_tokens = {str(gen_tokens).lower()}: prompt contents are always modelled "
                       "here (as token segments), so prefixes are shared exactly where they are in the original",
                 toml_key="workload", origin=join(path, "generate_prompt_tokens"))
    return {"arrival": arrival, "clients": clients}, sim


# -- shared prefixes ---------------------------------------------------------------------------------

_PATTERN_NAME = ("name", "pattern_name", "prefix_id", "id")
_PATTERN_LEN = ("prefix_length", "prefix_tokens", "length", "tokens", "num_tokens", "token_count", "prefix_len")
_PATTERN_PROB = ("weight", "probability", "frequency", "share")
_PATTERN_VARIANTS = ("num_variants", "variants", "num_prefixes", "count")
_NO_PREFIX = ("random", "none", "unique", "no_prefix", "no-prefix")


def parse_prefix_patterns(raw, path: str) -> list[dict]:
    """The original's ``prefix_patterns``: a list of mappings (or a mapping name -> mapping), each
    with a name (``name`` / ``prefix_id`` / ``type``), a prefix length in tokens (``prefix_length``
    / ``prefix_tokens`` / ``length`` / ``tokens``), a probability (``weight`` / ``probability`` /
    ``frequency``; weights summing to more than 1 are normalised, less than 1 leaves the rest
    without a shared prefix) and optionally ``num_variants`` (distinct prefixes of that kind).
    A pattern of type ``random`` / ``none`` / ``unique`` or of length 0 has no shared prefix.

    Returns ``[{"name", "length", "prob", "variants", "path"}]``; probabilities sum to <= 1."""
    if isinstance(raw, dict):
        items = [(join(path, k), dict(v, name=v.get("name", k)) if isinstance(v, dict) else v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(join(path, i), v) for i, v in enumerate(raw)]
    else:
        raise ScenarioError(f"must be a list of prefix patterns, got {type_name(raw)}", key=path)
    out = []
    for kp, pat in items:
        pat = mapping(pat, kp)
        kind = string(pat, "type", kp, default="") or ""
        name_key = first_key(pat, _PATTERN_NAME)
        name = str(pat[name_key]) if name_key else (kind or f"pattern{len(out)}")
        len_key = first_key(pat, _PATTERN_LEN)
        length = integer(pat, len_key, kp, lo=0) if len_key else None
        prob_key = first_key(pat, _PATTERN_PROB)
        prob = number(pat, prob_key, kp, lo=0.0) if prob_key else 1.0
        var_key = first_key(pat, _PATTERN_VARIANTS)
        variants = integer(pat, var_key, kp, lo=1) if var_key else 1
        if kind.strip().lower() in _NO_PREFIX or length == 0:
            length = 0
        elif length is None:
            raise ScenarioError("is required: the shared prefix's length in tokens (prefix_length)",
                                key=join(kp, "prefix_length"))
        out.append({"name": name, "length": length, "prob": prob, "variants": variants, "path": kp})
    total = sum(p["prob"] for p in out)
    if total > 1.0 + 1e-9:
        for p in out:
            p["prob"] /= total
    return out


def _split_by_patterns(clients: list[dict], patterns: list, gen_tokens: bool | None, ctx: Context,
                       path: str) -> list[dict]:
    """One client per (profile, pattern) and one per profile for the rest (module docstring)."""
    if gen_tokens is False:
        ctx.note(DROPPED, "prefix_patterns: generate_prompt_tokens is false, so the original builds no prompt "
                          "tokens and shares no prefix; the patterns are ignored", toml_key="workload",
                 origin=join(path, "prefix_patterns"))
        return clients
    out: list[dict] = []
    names = {c["name"] for c in clients}
    for ci, (client, (pats, origin)) in enumerate(zip(clients, patterns)):
        if not pats:
            out.append(client)
            continue
        rest = max(0.0, 1.0 - sum(p["prob"] for p in pats if p["length"] > 0))
        shared = [p for p in pats if p["length"] > 0 and p["prob"] > 0]
        described = []
        for p in shared:
            c = dict(client, share=float(f"{client['share'] * p['prob']:.12g}"))
            name, j = f"{client['name']}+{p['name']}", 2
            while name in names:
                name, j = f"{client['name']}+{p['name']}-{j}", j + 1
            names.add(name)
            c["name"] = name
            c["system_prompt_tokens"] = p["length"]
            if p["variants"] > 1:
                c["num_system_prompts"] = p["variants"]
            c["system_prompt_pool"] = p["name"]
            out.append(c)
            described.append(f"{p['name']!r} ({p['length']} tokens, p = {fmt(p['prob'])}"
                             + (f", {p['variants']} variants" if p["variants"] > 1 else "") + ")")
        if rest > 1e-12:
            out.append(dict(client, share=float(f"{client['share'] * rest:.12g}")))
        ctx.note(NOTE, f"prefix_patterns of profile {client['name']!r}: " + ", ".join(described)
                       + (f", no shared prefix p = {fmt(rest)}" if rest > 1e-12 else "")
                       + ": one client per pattern (system_prompt_tokens = the prefix, put in front of the drawn "
                         "prompt; system_prompt_pool = the pattern name, shared by every profile using it)",
                 toml_key="workload.clients", origin=origin)
    if gen_tokens is None:
        ctx.note(NOTE, "prefix_patterns without generate_prompt_tokens: the patterns are used (prompt contents "
                       "are always modelled here)", toml_key="workload.clients")
    return out


def _convert_profile(prof: dict, kp: str, tk: str, ctx: Context, names: set[str], cap: int) -> dict:
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
        if c > 0 and cap > 1:
            conv: dict = {"turns": {"dist": "empirical", "values": list(range(1, cap + 1)),
                                    "weights": [float(f"{w:.12g}") for w in turns_weights(c, cap=cap)]}}
            ctx.note(NOTE, f"conversational_probability = {fmt(c)}: a conversation always gets a second turn, "
                           f"then goes on with probability {CONTINUE_PROB} after each follow-up, at most {cap} "
                           f"turns: P(1) = 1 - c, P(k) = c * 0.3 * 0.7^(k-2), P({cap}) = c * 0.7^{cap - 2} "
                           f"(weights of 1..{cap} turns below, exact; mean {fmt(mean_turns(c, cap=cap))} turns)",
                     toml_key=f"{tk}.conversation", origin=join(kp, "conversational_probability"))
            ctx.note(NOTE, "follow-up prompt = the previous prompt + the previous turn's output + a new input drawn "
                           "from prompt_tokens, as in the original; here the history is real content, so it hits "
                           "the prefix cache where it is still cached", toml_key=f"{tk}.conversation")
            if follow is not None:
                conv["think_time_s"] = to_dist(follow, join(kp, "follow_up_inter_arrival_time_dist_config"),
                                               f"{tk}.conversation", ctx, integer=False)
                ctx.origin(f"{tk}.conversation.think_time_s", join(kp, "follow_up_inter_arrival_time_dist_config"))
            else:
                ctx.note(NOTE, "no follow_up_inter_arrival_time_dist_config: this project's default gap "
                               "(5 s) is used", toml_key=f"{tk}.conversation")
            conv["think_from"] = "arrival"
            ctx.note(NOTE, "think_from = \"arrival\": a follow-up arrives its gap after the previous turn's "
                           "arrival, finished or not, as in the original; follow-ups that would arrive at or "
                           "after the end of the workload are not sent", toml_key=f"{tk}.conversation")
            client["conversation"] = conv
            ctx.origin(f"{tk}.conversation", join(kp, "conversational_probability"))
        elif c > 0:
            ctx.note(NOTE, "conversational_probability is unused: workload.max_turns_per_session = 1",
                     toml_key=tk, origin=join(kp, "conversational_probability"))
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
    if integer:
        _check_sane_tokens(law, path)
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


def _check_sane_tokens(law: D.Law, path: str) -> None:
    """Token counts whose typical draw no request can hold: the original cannot run them either,
    and here the workload could not be generated; say so now (convert, validate, simulate alike)."""
    if law.hi is not None and law.hi < ABSURD_TOKENS:
        return
    median = D.median(law)
    if not median >= ABSURD_TOKENS:
        return
    if law.type == "LogNormal":
        mu = law.params["mu"]
        hint = f" (for a median of {fmt(mu)} tokens write mean: {math.log(mu):.4g})" if mu > 1 else ""
        raise ScenarioError(f"LogNormal mean = {fmt(mu)} is mu of ln X (the original passes it to numpy's "
                            f"lognormal as the log-scale mean), so the median draw is e^{fmt(mu)} = {median:.3g} "
                            "tokens: no request can be that long, and the original cannot run this either"
                            + hint, key=join(path, "mean"))
    raise ScenarioError(f"{D.describe(law)}: the median draw is {median:.3g} tokens: no request can be that long, "
                        "and the original cannot run this either", key=path)


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
