"""One table of search-quality results (`search_quality.py` JSON), the one issue 21 asks for.

    python benchmarks/quality_table.py benchmarks/results/quality-e3-*.json

Per result, at its last scored epoch: SMASH's Kendall tau, SMASH minus FLOPs (paired), tau given FLOPs, the
tau of the rank-average of SMASH, FLOPs and NASWOT (does SMASH add to the free baselines?), the corrupt
study per field (true c's win rate, mean gap in points, Wilcoxon p), the collapse measures, the ablations,
and the cost (SMASH training images per second, scoring seconds per architecture). Intervals are bootstrap
95% over the panel's architectures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import truth_panel  # noqa: E402  (benchmarks/ is not a package)


def _ci(d: dict | None, key: str = "tau") -> str:
    if not d or d.get(key) is None:
        return "n/a"
    lo, hi = d.get("lo"), d.get("hi")
    return f"{d[key]:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{d[key]:+.2f}"


def rank_average_tau(doc: dict, entry: dict, true_of: dict[str, float], names: tuple[str, ...]) -> float | None:
    """Kendall tau of the mean rank over `names` ("smash" or a baseline) against the truth."""
    import numpy as np
    from scipy import stats

    ids = [i for i in entry["smash_errors"] if i in true_of]
    if len(ids) < 3:
        return None
    values = {"smash": entry["smash_errors"], **doc["baselines_by_arch"]}
    ranks = [stats.rankdata([values[n][i] for i in ids]) for n in names]
    return float(stats.kendalltau(np.mean(ranks, 0), [true_of[i] for i in ids]).statistic)


def row(path: Path, true_of: dict[str, float]) -> dict:
    doc = json.loads(path.read_text())
    entry = doc["by_epoch"][-1]
    smash = entry["stats"].get("smash", {})
    out = dict(variant=doc["variant"], epoch=entry["epoch"],
               tau=_ci(dict(tau=smash.get("kendall_tau"), lo=smash.get("kendall_lo"), hi=smash.get("kendall_hi"))),
               minus_flops=_ci((smash.get("tau_minus") or {}).get("flops"), "diff"),
               given_flops=_ci(smash.get("tau_given_flops")),
               avg_flops_naswot=rank_average_tau(doc, entry, true_of, ("flops", "naswot")),
               avg_smash_flops_naswot=rank_average_tau(doc, entry, true_of, ("smash", "flops", "naswot")),
               images_per_s=doc.get("smash_images_per_s"), score_s_per_arch=entry.get("score_seconds_per_arch"))
    corrupt = (entry.get("corrupt") or {}).get("stats") or []
    out["corrupt"] = {r["variant"]: (r["win_rate"], 100 * r["mean_gap"], (r.get("extra_json") or {}).get("wilcoxon_p"))
                      for r in corrupt if r.get("n")}
    collapse = (doc.get("collapse_by_epoch") or [{}])[-1]
    moved = [v for v in (collapse.get("shuffle_distance") or {}).values() if v is not None]
    out["shuffle_distance"] = sum(moved) / len(moved) if moved else None
    out["tile_cosine"] = collapse.get("tile_cosine")
    errs = list(entry["smash_errors"].values())
    out["mean_error"] = sum(errs) / len(errs)
    out["regret"] = (entry.get("picks") or doc.get("picks") or {}).get("smash_top1")
    out["ablate"] = {k: (v["mean_error"], (v.get("stats") or {}).get("kendall_tau"))
                     for k, v in (entry.get("ablate") or {}).items()}
    return out


def _f(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    usage = "usage: python benchmarks/quality_table.py RESULT.json ..."
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        return 0
    paths = [Path(p) for p in args]
    if not paths:
        print(usage, file=sys.stderr)
        return 2
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"no result file {missing[0]}; pass search_quality.py's JSON files (benchmarks/results/quality-*.json)",
              file=sys.stderr)
        return 2
    truth = truth_panel.summarize()
    true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
    rows = [row(p, true_of) for p in paths]
    print("| variant | epochs | tau [95%] | SMASH - FLOPs [95%] | tau given FLOPs [95%] | rank-avg FLOPs+NASWOT | "
          "+ SMASH | shuffle distance | tile cosine | img/s | score s/arch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['epoch']} | {r['tau']} | {r['minus_flops']} | {r['given_flops']} | "
              f"{_f(r['avg_flops_naswot'], '+.2f')} | {_f(r['avg_smash_flops_naswot'], '+.2f')} | "
              f"{_f(r['shuffle_distance'], '.3f')} | {_f(r['tile_cosine'], '.3f')} | {_f(r['images_per_s'], '.0f')} | "
              f"{_f(r['score_s_per_arch'], '.2f')} |")
    print()
    print("| variant | corrupt: field win% / gap pts / p | SMASH err% (generated 1x1s) | SMASH's first place: regret "
          "(points) | ablate: mean tile err% / tau, random err% / tau |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        corrupt = "; ".join(f"{f} {100 * w:.0f}% / {g:+.2f} / {_f(p, '.2g')}" for f, (w, g, p) in r["corrupt"].items())
        ablate = ", ".join(f"{k} {100 * e:.1f}% / {_f(t, '+.2f')}" for k, (e, t) in r["ablate"].items())
        regret = _f(None if r["regret"] is None else 100 * r["regret"], ".2f")
        print(f"| {r['variant']} | {corrupt or 'n/a'} | {100 * r['mean_error']:.1f}% | {regret} | {ablate or 'n/a'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
