"""Distribution configs of the original LLMPerfOracle -> this project's ``{ dist = ... }`` tables.

An original config is ``{type: <Name>, <params>..., is_int: bool}``. Mapping (module
constants below name the numbers):

===============  ==================================  ==========================================
original          parameters read (aliases)           here
===============  ==================================  ==========================================
Constant, Fixed   value                               ``constant`` (exact)
Exponential       rate (lambda) or scale/mean         ``exponential``, mean = 1/rate (exact)
Uniform           low/high (min/max)                  ``uniform`` (exact for times; integer
                                                      draws include both ends here)
Normal            mean (mu, loc), std (sigma, scale)  ``normal`` (exact)
LogNormal         mean (mu) = mu of ln X, sigma       ``lognormal`` with ``median = exp(mu)``
                                                      (exact: same law)
Pareto            shape (alpha, a), scale (xm)        classic Pareto, X >= scale:
                                                      ``empirical`` (approximated)
Weibull           shape (k, a), scale (lambda)        ``empirical`` (approximated)
Gamma             shape (k, alpha), scale (theta)     ``empirical`` (approximated)
                  or rate (beta)
Mixture           components [{weight, <config>}]     ``empirical`` (approximated; exact when
                  (or weights: [...])                 every component is a constant)
===============  ==================================  ==========================================

``empirical`` approximations use :data:`NUM_QUANTILES` equal-probability quantiles at
``(i + 0.5) / NUM_QUANTILES`` of the exact law (so the mean is close, and the tail beyond the
last quantile is cut); integer values are rounded and merged with weights.

For arrival processes only the mean and variance of a gap distribution matter
(:func:`moments`): they pick a ``gamma`` process with the same mean and coefficient of variation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from oracle.errors import ScenarioError

NUM_QUANTILES = 200
TYPES = ("Constant", "Fixed", "Exponential", "Uniform", "Normal", "LogNormal", "Pareto", "Weibull",
         "Gamma", "Mixture")
_ALIASES = {t.lower(): t for t in TYPES} | {"deterministic": "Constant", "exp": "Exponential",
                                            "gaussian": "Normal", "log_normal": "LogNormal",
                                            "log-normal": "LogNormal", "mix": "Mixture"}
# parameter aliases per canonical type: name -> keys accepted (first one is the original's)
_PARAMS = {
    "Constant": {"value": ("value", "val", "constant")},
    "Exponential": {"rate": ("rate", "lambda", "lam"), "scale": ("scale", "mean")},
    "Uniform": {"low": ("low", "min", "a"), "high": ("high", "max", "b")},
    "Normal": {"mean": ("mean", "mu", "loc"), "std": ("std", "sigma", "stddev", "std_dev", "scale")},
    "LogNormal": {"mu": ("mean", "mu"), "sigma": ("sigma", "std", "s")},
    "Pareto": {"shape": ("shape", "alpha", "a", "b"), "scale": ("scale", "xm", "x_m")},
    "Weibull": {"shape": ("shape", "k", "a", "c"), "scale": ("scale", "lambda", "lam")},
    "Gamma": {"shape": ("shape", "k", "alpha", "a"), "scale": ("scale", "theta"), "rate": ("rate", "beta")},
    "Mixture": {"components": ("components", "distributions"), "weights": ("weights",)},
}
_CLIP = {"min": ("min", "min_value", "clip_min"), "max": ("max", "max_value", "clip_max")}
_COMMON = ("type", "is_int")


@dataclass(frozen=True)
class Law:
    """A parsed original distribution: canonical type name + resolved parameters."""

    type: str
    params: dict
    components: tuple = ()          # Mixture: ((weight, Law), ...)
    lo: float | None = None         # clipping bounds given in the original config
    hi: float | None = None
    is_int: bool | None = None
    unknown: tuple = ()             # keys nobody read (reported as notes)


def parse_law(cfg, key: str) -> Law:
    """Read one original distribution config; ``key`` is its dotted path (for errors)."""
    if not isinstance(cfg, dict):
        raise ScenarioError(f"must be a distribution config (a mapping with 'type'), got {cfg!r}", key=key)
    if "type" not in cfg:
        raise ScenarioError("is required: the distribution type (one of " + ", ".join(TYPES) + ")",
                            key=f"{key}.type")
    raw_type = cfg["type"]
    canon = _ALIASES.get(str(raw_type).lower().replace(" ", "")) if isinstance(raw_type, str) else None
    if canon is None:
        raise ScenarioError(f"unknown distribution type {raw_type!r}; the original format knows: "
                            + ", ".join(TYPES), key=f"{key}.type")
    if canon == "Fixed":
        canon = "Constant"
    used = set(_COMMON)
    params: dict = {}
    for name, aliases in _PARAMS[canon].items():
        for a in aliases:
            if a in cfg:
                params[name] = cfg[a]
                used.add(a)
                break
    lo = hi = None
    if canon != "Uniform":
        for bound, aliases in _CLIP.items():
            for a in aliases:
                if a in cfg:
                    used.add(a)
                    v = _num(cfg[a], f"{key}.{a}")
                    lo, hi = (v, hi) if bound == "min" else (lo, v)
    is_int = cfg.get("is_int")
    if is_int is not None and not isinstance(is_int, bool):
        raise ScenarioError(f"must be true or false, got {is_int!r}", key=f"{key}.is_int")
    unknown = tuple(k for k in cfg if k not in used)
    components: tuple = ()
    if canon == "Mixture":
        components = _mixture(cfg, params, key)
        params = {}
    else:
        params = _check_params(canon, params, key)
    return Law(type=canon, params=params, components=components, lo=lo, hi=hi, is_int=is_int, unknown=unknown)


def _num(v, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ScenarioError(f"must be a finite number, got {v!r}", key=key)
    return float(v)


def _param_key(canon: str, name: str, cfg_key: str) -> str:
    return f"{cfg_key}.{_PARAMS[canon][name][0]}"


def _check_params(canon: str, p: dict, key: str) -> dict:
    def need(name: str, default=None, *, positive=False, nonneg=False) -> float:
        if name not in p:
            if default is not None:
                return default
            raise ScenarioError(f"is required for a {canon} distribution", key=_param_key(canon, name, key))
        v = _num(p[name], _param_key(canon, name, key))
        if positive and v <= 0:
            raise ScenarioError(f"must be > 0, got {v:g}", key=_param_key(canon, name, key))
        if nonneg and v < 0:
            raise ScenarioError(f"must be >= 0, got {v:g}", key=_param_key(canon, name, key))
        return v
    if canon == "Constant":
        return {"value": need("value")}
    if canon == "Exponential":
        if "rate" in p:
            return {"rate": need("rate", positive=True)}
        if "scale" in p:
            return {"rate": 1.0 / need("scale", positive=True)}
        raise ScenarioError("is required for an Exponential distribution", key=f"{key}.rate")
    if canon == "Uniform":
        low, high = need("low"), need("high")
        if low > high:
            raise ScenarioError(f"must be <= high, got low = {low:g} > high = {high:g}", key=f"{key}.low")
        return {"low": low, "high": high}
    if canon == "Normal":
        return {"mean": need("mean"), "std": need("std", nonneg=True)}
    if canon == "LogNormal":
        mu = need("mu")
        if mu > 700:   # exp(mu), the median, must be a finite number
            raise ScenarioError(f"must be <= 700 (mu of ln X), got {mu:g}", key=_param_key(canon, "mu", key))
        return {"mu": mu, "sigma": need("sigma", nonneg=True)}
    if canon == "Gamma":
        shape = need("shape", positive=True)
        if "rate" in p and "scale" not in p:
            return {"shape": shape, "scale": 1.0 / need("rate", positive=True)}
        return {"shape": shape, "scale": need("scale", 1.0, positive=True)}
    # Pareto, Weibull
    return {"shape": need("shape", positive=True), "scale": need("scale", 1.0, positive=True)}


def _mixture(cfg: dict, params: dict, key: str) -> tuple:
    comps = params.get("components")
    if not isinstance(comps, list) or not comps:
        raise ScenarioError("is required for a Mixture distribution: a non-empty list of component configs",
                            key=f"{key}.components")
    weights = params.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(comps)):
        raise ScenarioError(f"must be a list of {len(comps)} numbers (one per component)", key=f"{key}.weights")
    out = []
    for i, c in enumerate(comps):
        ck = f"{key}.components.{i}"
        if not isinstance(c, dict):
            raise ScenarioError(f"must be a mapping, got {c!r}", key=ck)
        inner = c
        for wrap in ("distribution", "dist", "config"):
            if isinstance(c.get(wrap), dict):
                inner, ck = c[wrap], f"{ck}.{wrap}"
                break
        if weights is not None:
            w = _num(weights[i], f"{key}.weights.{i}")
        elif "weight" in c:
            w = _num(c["weight"], f"{key}.components.{i}.weight")
        else:
            w = 1.0
        if w < 0:
            raise ScenarioError(f"must be >= 0, got {w:g}", key=f"{key}.components.{i}.weight")
        law = parse_law({k: v for k, v in inner.items() if k != "weight"}, ck)
        out.append((w, law))
    if sum(w for w, _ in out) <= 0:
        raise ScenarioError("component weights must have a positive sum", key=f"{key}.components")
    total = sum(w for w, _ in out)
    return tuple((w / total, law) for w, law in out)


# -- describing, moments, quantiles -----------------------------------------------------------------

def describe(law: Law) -> str:
    """``LogNormal(mean=5.0, sigma=0.5)`` in the original's parameter names."""
    if law.type == "Mixture":
        return "Mixture(" + ", ".join(f"{w:.3g}: {describe(c)}" for w, c in law.components) + ")"
    names = {"LogNormal": {"mu": "mean"}}.get(law.type, {})
    return f"{law.type}(" + ", ".join(f"{names.get(k, k)}={v:g}" for k, v in law.params.items()) + ")"


def moments(law: Law) -> tuple[float, float]:
    """(mean, variance) of the exact law, ignoring clipping; inf where it diverges."""
    p, t = law.params, law.type
    if t == "Constant":
        return p["value"], 0.0
    if t == "Exponential":
        return 1.0 / p["rate"], 1.0 / p["rate"] ** 2
    if t == "Uniform":
        return (p["low"] + p["high"]) / 2, (p["high"] - p["low"]) ** 2 / 12
    if t == "Normal":
        return p["mean"], p["std"] ** 2
    if t == "LogNormal":
        mu, s2 = p["mu"], p["sigma"] ** 2
        return math.exp(mu + s2 / 2), (math.exp(s2) - 1) * math.exp(2 * mu + s2)
    if t == "Pareto":
        a, xm = p["shape"], p["scale"]
        mean = a * xm / (a - 1) if a > 1 else math.inf
        var = xm * xm * a / ((a - 1) ** 2 * (a - 2)) if a > 2 else math.inf
        return mean, var
    if t == "Weibull":
        k, lam = p["shape"], p["scale"]
        g1, g2 = math.gamma(1 + 1 / k), math.gamma(1 + 2 / k)
        return lam * g1, lam * lam * (g2 - g1 * g1)
    if t == "Gamma":
        return p["shape"] * p["scale"], p["shape"] * p["scale"] ** 2
    m = sum(w * moments(c)[0] for w, c in law.components)
    second = sum(w * (moments(c)[1] + moments(c)[0] ** 2) for w, c in law.components)
    return m, max(second - m * m, 0.0)


def quantile(law: Law, u: float) -> float:
    """The exact law's inverse CDF at ``u`` in (0, 1) (not for Mixture)."""
    p, t = law.params, law.type
    if t == "Constant":
        return p["value"]
    if t == "Exponential":
        return -math.log1p(-u) / p["rate"]
    if t == "Uniform":
        return p["low"] + u * (p["high"] - p["low"])
    if t == "Normal":
        return p["mean"] + p["std"] * NormalDist().inv_cdf(u)
    if t == "LogNormal":
        return math.exp(p["mu"] + p["sigma"] * NormalDist().inv_cdf(u))
    if t == "Pareto":
        return p["scale"] * (1.0 - u) ** (-1.0 / p["shape"])
    if t == "Weibull":
        return p["scale"] * (-math.log1p(-u)) ** (1.0 / p["shape"])
    if t == "Gamma":
        return p["scale"] * gamma_ppf(p["shape"], u)
    raise ValueError(f"no quantile function for {t}")


def median(law: Law) -> float:
    """The exact law's median (a mixture: the median of its discretised quantiles), ignoring clipping."""
    if law.type != "Mixture":
        return quantile(law, 0.5)
    pairs = sorted(discretize(law))
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= 0.5:
            return v
    return pairs[-1][0]


def discretize(law: Law, n: int = NUM_QUANTILES) -> list[tuple[float, float]]:
    """(value, probability) pairs: ``n`` equal-probability quantiles (mixtures: per component)."""
    if law.type == "Constant":
        return [(law.params["value"], 1.0)]
    if law.type == "Mixture":
        return [(v, w * q) for w, c in law.components if w > 0 for v, q in discretize(c, n)]
    return [(quantile(law, (i + 0.5) / n), 1.0 / n) for i in range(n)]


def is_exactly_discrete(law: Law) -> bool:
    return law.type == "Constant" or (law.type == "Mixture" and all(is_exactly_discrete(c)
                                                                    for _, c in law.components))


# -- regularised incomplete gamma (for Gamma quantiles; no scipy) ----------------------------------

def _gamma_p(a: float, x: float) -> float:
    """P(a, x) = lower regularised incomplete gamma (series below a + 1, continued fraction above)."""
    if x <= 0:
        return 0.0
    log_pre = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(log_pre))
    # Lentz's continued fraction for Q(a, x)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(log_pre) * h)


def gamma_ppf(a: float, u: float) -> float:
    """Inverse of :func:`_gamma_p` in x (unit scale), by bracketing and bisection."""
    hi = max(1.0, a)
    while _gamma_p(a, hi) < u:
        hi *= 2
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _gamma_p(a, mid) < u:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(hi, 1e-300):
            break
    return (lo + hi) / 2
