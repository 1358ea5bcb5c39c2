"""verdicts.md from the verdict records (verdicts.json): the table, then one section per claim."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):+.1f}%"


def _p(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _g(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4g}"


def data_label(rec: dict[str, Any]) -> str:
    d = rec["data"]
    span = f"{d.get('since') or 'start'} to {d.get('until') or 'end'}"
    if d["kind"] == "synthetic":
        return f"synthetic market, planted signal {d.get('signal')} ({d['timeframe']}, {span})"
    return f"real {d['symbol']} {d['timeframe']} ({d['source']}, {span})"


def seeds_label(seeds: list[str]) -> str:
    """'5 seeds (0-4)' for a run of consecutive integer seeds, else the list."""
    if not seeds:
        return "no seeds"
    try:
        ints = sorted(int(s) for s in seeds)
    except ValueError:
        return f"{len(seeds)} seeds ({', '.join(seeds)})"
    run = ints == list(range(ints[0], ints[0] + len(ints)))
    which = f"{ints[0]}-{ints[-1]}" if run and len(ints) > 2 else ", ".join(map(str, ints))
    return f"{len(ints)} seed{'s' * (len(ints) != 1)} ({which})"


def verdict_line(rec: dict[str, Any]) -> str:
    """The verdict in one sentence that carries its evidence base: the data (real or planted-signal
    market) and the seeds, then the reason."""
    data = data_label(rec)
    if rec["data"]["kind"] == "synthetic":
        data = f"the planted-signal {data} (not real prices)"
    missing = f" ({rec['data']['missing']})" if rec["data"].get("missing") else ""
    return f"{rec['verdict']} on {data}{missing}, {seeds_label(rec['seeds'])}: {rec['reason']}"


def primary(rec: dict[str, Any]) -> str:
    """The primary comparisons in one line: effect [CI], Holm p, seeds pointing the claimed way."""
    parts = []
    for c in rec["comparisons"]:
        if c["role"] != "primary":
            continue
        way = "" if c.get("claimed_way") is None else f", {int(c['claimed_way'])}/{c['n']} seeds"
        parts.append(f"{c['comparison']}: {_pct(c['effect'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}], "
                     f"p_Holm {_p(c['p_holm'])}{way}")
    return "; ".join(parts) or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc)]


def markdown(meta: dict[str, Any], study_dir: Path) -> str:
    """The whole verdicts.md."""
    claims = meta["claims"]
    out = [f"# The article's claims, tested ({meta['profile']} profile)", "",
           f"Written {meta['written']}; {meta['seconds']:.0f} s for this invocation (cells finished earlier were "
           "not re-run). Each claim's rule was written in its claim file before the run; effects are relative "
           "(treatment vs control, % of the control's mean, or differences of relative changes); p-values are "
           "Holm-corrected over each claim's primary comparisons (secondary ones: a separate family); "
           "the rule's 95% CI is the Student-t interval over seeds "
           "(a percentile bootstrap for spreads), and a percentile-bootstrap CI is shown beside it.", ""]
    rows = [[str(r["id"]), r["title"], data_label(r), f"{r['model']}/{r['target']}", seeds_label(r["seeds"]),
             r["rule"]["metric"], primary(r), f"**{r['verdict']}**"] for r in claims]
    out += _table(["#", "claim", "data", "model/target", "seeds", "metric", "primary comparisons", "verdict"], rows)
    out.append("")
    for r in claims:
        out += _section(r, study_dir)
    return "\n".join(out) + "\n"


def _section(r: dict[str, Any], study_dir: Path) -> list[str]:
    rule, d, c = r["rule"], r["data"], r["cells"]
    out = [f"## Claim {r['id']}: {r['title']}", "",
           f"- data: {data_label(r)}" + (f", {d['rows']} candles, hash `{d['hash']}`" if d.get("rows") else "")
           + (f" ({d['missing']})" if d.get("missing") else "")
           + (" (the planted-signal synthetic market, not real prices)" if d["kind"] == "synthetic" else ""),
           *([f"- why this data: {d['note'].strip()}"] if d.get("note") else []),
           f"- model {r['model']}, target {r['target']}; seeds {', '.join(r['seeds']) or '-'}; cells {c['ok']} ok"
           + (f", {c['failed']} failed" if c["failed"] else "") + (f", {c['pending']} pending" if c["pending"] else ""),
           "- grid: " + "; ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in r["grid"].items()),
           f"- sweep: `{_rel(r['sweep_dir'], study_dir)}` (summary.md, sweep_results.csv, plots/)",
           f"- rule (pre-registered): {rule['text']}",
           f"- rule parameters: metric `{rule['metric']}`, claimed {rule['claimed']}, margin {rule['margin']:g}, "
           f"alpha {rule['alpha']:g} on Holm p, require {rule['require']}, test {rule['test']}"
           + (f", relative change of the metric from {rule['change']['key']}={rule['change']['from']} to "
              f"{rule['change']['to']}" if rule.get("change") else ""), ""]
    if r.get("steps_target") is not None and "steps_to_target" in (rule["metric"], *(r.get("show") or [])):
        out += [f"Target validation loss for steps_to_target: {_g(r['steps_target'])}.", ""]
    if r["groups"]:
        keys = [k for k in r["groups"][0] if k not in ("n", "mean", "std", "show")]
        show = list(r["groups"][0].get("show") or {})
        rows = [[*(str(g[k]) for k in keys), str(g["n"]), f"{_g(g['mean'])} ± {_g(g['std'])}",
                 *(_g(g["show"][m]) for m in show)] for g in r["groups"]]
        out += _table([*keys, "n", f"{rule['metric']} mean ± std", *(f"{m} mean" for m in show)], rows) + [""]
    if r["comparisons"]:
        rows = []
        for x in r["comparisons"]:
            judged = "supports" if x.get("supports") else "opposes" if x.get("opposes") else "-"
            way = "-" if x.get("claimed_way") is None else f"{int(x['claimed_way'])}/{x['n']}"
            rows.append([x["comparison"], x["role"], str(x["n"]), _g(x["treatment_mean"]), _g(x["control_mean"]),
                         _pct(x["effect"]), f"[{_pct(x['ci_low'])}, {_pct(x['ci_high'])}]",
                         f"[{_pct(x.get('boot_low'))}, {_pct(x.get('boot_high'))}]", x["test"], _p(x["p"]),
                         _p(x["p_holm"]), _p(x.get("p_wilcoxon")), _p(x.get("min_p_wilcoxon")), way, judged])
        out += _table(["comparison", "role", "n", "treatment", "control", "effect", "95% CI (rule)",
                       "95% CI (bootstrap)", "test", "p", "p Holm",
                       "p Wilcoxon", "min p Wilcoxon", "claimed way", "judged"], rows) + [""]
        n = max((int(x["n"]) for x in r["comparisons"]), default=0)
        out += [f"Smallest reachable p-values with {n} pairs: Wilcoxon signed-rank {_p(2.0 ** (1 - n) if n else None)}"
                " (exact, two-sided); the paired t-test and Brown-Forsythe have no floor.", ""]
        notes = [f"{x['comparison']}: {x['note']}" for x in r["comparisons"] if x.get("note")]
        notes += [f"left out of the {r['profile']} profile: {x}" for x in r.get("left_out") or []]
        out += [f"- note: {n_}" for n_ in notes] + ([""] if notes else [])
    line = verdict_line(r)
    out += [f"**Verdict: {line.split(' ', 1)[0]}** {line.split(' ', 1)[1]}.", ""]
    out += [f"![claim {r['id']}]({_rel(p, study_dir)})" for p in r.get("plots", [])] + [""]
    if r.get("sweep_plots"):
        out += ["The sweep's own plots: " + ", ".join(f"[{Path(p).stem}]({_rel(p, study_dir)})"
                                                      for p in r["sweep_plots"]), ""]
    return out


def _rel(p: str, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)
