"""The HTML report: one self-contained file, verdict first, then the plots that explain it.

A pure function of the report dict (so a stored report renders the same later). Plots are
matplotlib figures inlined as SVG with text kept as text; no scripts, no external files.
"""

from __future__ import annotations

import io
from html import escape

GOOD, BAD, WARN, MUTED, INK = "#1a7f37", "#cf222e", "#bf8700", "#8c959f", "#1f2328"

_CSS = """
body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
.meta{color:#57606a;font-size:13px}
.verdict{border-radius:8px;padding:16px 20px;margin:16px 0;color:#fff}
.verdict h2{border:0;margin:0;font-size:22px;padding:0}
.verdict ul{margin:8px 0 0;padding-left:20px}.pass{background:#1a7f37}.fail{background:#cf222e}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:10px;margin:16px 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:22px}.card span{color:#57606a;font-size:12px}
.card.bad{border-color:#cf222e;background:#fff5f5}.card.bad b{color:#cf222e}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2}th{background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.flag{display:inline-block;background:#ffebe9;color:#cf222e;border-radius:10px;padding:0 8px;margin:1px 2px;font-size:12px}
.ok{color:#1a7f37}.bad{color:#cf222e}.note{color:#57606a;font-size:13px}
figure{margin:8px 0}figure svg{max-width:100%;height:auto}
details summary{cursor:pointer;color:#57606a;font-size:13px;margin:6px 0}
"""


def render_html(report: dict) -> str:
    """The report as one HTML page."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>prefstream quality report {escape(report.get('report_id') or '')}</title><style>{_CSS}</style></head><body><main>",
        _header(report),
        _verdict(report),
        _cards(report),
        _judges(report),
        _annotators(report),
        _position(report),
        _length(report),
        _labels_over_time(report),
        _agreement(report),
        _hygiene(report),
        _timestamps(report),
        _expectations(report),
        _missing(report),
        _settings(report),
        "</main></body></html>",
    ]
    return "\n".join(parts)


# --- sections ---------------------------------------------------------------------------


def _header(report: dict) -> str:
    w = report["window"]
    window = "all feedback" if not (w["since"] or w["until"]) else f"ts in [{w['since'] or '−∞'}, {w['until'] or '+∞'})"
    c = report["counts"]
    return (
        "<h1>Feedback quality report</h1>"
        f"<div class=meta>report <b>{escape(report.get('report_id') or 'not stored')}</b> · snapshot {report['snapshot']} · {escape(report['created_at'][:19])} UTC · "
        f"{escape(window)} · {c['thumbs']['annotations']:,} thumbs, {c['pairwise']['annotations']:,} pairwise judgements · "
        f"prefstream {escape(report['prefstream_version'])}</div>"
    )


def _verdict(report: dict) -> str:
    gate = report["gate"]
    if gate["passed"]:
        return "<div class='verdict pass'><h2>✔ Gate passed: this feedback may be exported for training</h2></div>"
    items = "".join(f"<li><b>{escape(f['check'])}</b>: {escape(f['message'])}<br><small>remedy: {escape(f['remedy'])}</small></li>" for f in gate["failures"])
    return f"<div class='verdict fail'><h2>✘ Gate failed: {len(gate['failures'])} problem(s) to fix before training</h2><ul>{items}</ul></div>"


def _cards(report: dict) -> str:
    a, b, g = report["agreement"], report["bias"], report["settings"]["gate"]
    cards = []
    for kind in ("thumbs", "pairwise"):
        alpha = a[kind]["alpha"]
        cards.append(_card(f"{kind} agreement (α)", "—" if alpha is None else f"{alpha:.2f}", alpha is not None and alpha < g["min_alpha"]))
    flagged = report["flagged_annotators"]
    cards.append(_card("unreliable annotators", f"{flagged['count']:,} of {report['annotator_summary']['total']:,}", bool(flagged["share"] and flagged["share"] > g["max_flagged_share"])))
    skew, taste = b["length_skew"], b["length_taste"]
    cards.append(_card("longer response won (length_skew)", _pct(skew.get("longer_won_share")), skew["flagged"]))
    cards.append(_card("length effect beyond quality (length_taste)", "—" if taste.get("coef") is None else f"{taste['coef']:+.2f}", taste["flagged"]))
    pb = b["position_bias"]
    cards.append(_card("first-shown response won", _pct(pb.get("first_shown_rate"), 1), pb["flagged"]))
    li = b["label_imbalance"]
    cards.append(_card("thumbs up : down", "—" if li.get("ratio") is None else f"{li['ratio']:.2f} : 1", li["flagged"]))
    return f"<div class=cards>{''.join(cards)}</div>"


def _card(label: str, value: str, bad: bool) -> str:
    return f"<div class='card{' bad' if bad else ''}'><b>{escape(value)}</b><span>{escape(label)}{' · flagged' if bad else ''}</span></div>"


MAX_ROWS, MAX_PLOTTED = 200, 50  # thousands of end users must not make a page nobody scrolls


def _annotators(report: dict) -> str:
    annotators = report["annotators"]
    if not annotators:
        return "<h2>Annotators</h2><p class=note>No annotators in the audited window.</p>"
    # Flagged annotators first (they are what to act on), then the rest by volume.
    ordered = sorted(annotators, key=lambda a: (not a["flags"], -a["volume"]["total"], a["annotator_id"]))[:MAX_ROWS]
    rows = []
    for a in ordered:
        t, p = a.get("thumbs", {}), a.get("pairwise", {})
        flags = "".join(f"<span class=flag>{escape(f)}</span>" for f in a["flags"]) or "<span class=ok>—</span>"
        rows.append(
            f"<tr><td>{escape(a['annotator_id'])}</td><td>{a['judge']}</td><td class=num>{a['volume']['total']:,}</td>"
            f"<td class=num>{_num(a['reliability'])}</td><td class=num>{_pct(t.get('agreement'))}</td><td class=num>{_pct(p.get('agreement'))}</td>"
            f"<td class=num>{_pct(t.get('up_rate'))}</td><td class=num>{_pct(p.get('first_shown_rate'))}</td><td>{flags}</td></tr>"
        )
    plotted = sorted(ordered[:MAX_PLOTTED], key=lambda a: (a["reliability"] is None, -(a["reliability"] or 0), a["annotator_id"]))
    summary = report["annotator_summary"]
    tail = summary.get("tail")
    more = (
        f"<p class=note>Showing {len(ordered)} of {summary['total']:,} annotators (flagged first, then by volume). "
        + (f"The other {tail['annotators']:,} gave {tail['labels']:,} labels (median {tail['labels_per_annotator_median']:g} each); "
           f"{tail['flagged']:,} of them are flagged; median reliability {_num(tail['reliability'].get('p50'))}.</p>" if tail else "</p>")
        if summary["total"] > len(ordered) or len(ordered) > MAX_PLOTTED
        else ""
    )
    return (
        "<h2>Annotators: whom to trust</h2>"
        "<p class=note>Reliability is the Dawid-Skene estimate of how well an annotator's labels track the latent truth "
        "(0 = no better than chance, 1 = perfect). Agreement is the share of labels equal to the majority of the <i>other</i> annotators on the same item.</p>"
        f"<figure>{_plot_reliability(plotted)}</figure>{more}"
        "<table><tr><th>annotator</th><th>judge</th><th class=num>labels</th><th class=num>reliability</th><th class=num>agrees (thumbs)</th>"
        "<th class=num>agrees (pairwise)</th><th class=num>up rate</th><th class=num>first-shown rate</th><th>flags</th></tr>" + "".join(rows) + "</table>"
    )


def _position(report: dict) -> str:
    pb = report["bias"]["position_bias"]
    rows = [(a["annotator_id"], a["pairwise"]) for a in report["annotators"] if a.get("pairwise", {}).get("first_shown_rate") is not None]
    if not rows:
        return f"<h2>Position bias</h2><p class=note>{escape(pb.get('reason', 'No pairwise judgement records which response was shown first.'))}</p>"
    margin = report["settings"]["gate"]["position_margin"]
    text = (
        f"Over all annotators the first-shown response won <b>{_pct(pb['first_shown_rate'], 1)}</b> of {pb['n']:,} decided judgements "
        f"(95% CI {_pct(pb['ci'][0], 1)}–{_pct(pb['ci'][1], 1)}; unbiased is 50%). "
        f"Annotators outside the shaded band (50% ± {margin:.0%}) with a significant binomial test are flagged <span class=flag>position_bias</span>."
    )
    rows = sorted(rows, key=lambda r: -abs(r[1]["first_shown_rate"] - 0.5))[:MAX_PLOTTED]  # the most lopsided
    return f"<h2>Position bias</h2><p>{text}</p><figure>{_plot_position(rows, pb, margin)}</figure>"


def _length(report: dict) -> str:
    skew, taste = report["bias"]["length_skew"], report["bias"]["length_taste"]
    if not skew.get("histogram"):
        return f"<h2>Length</h2><p class=note>{escape(skew.get('reason', 'not computed'))}</p>"
    g = report["settings"]["gate"]
    ci = skew.get("longer_won_ci")
    share = (f"The longer response won <b>{_pct(skew.get('longer_won_share'), 1)}</b> of {skew['n_unequal']:,} decided pairs of unequal length"
             + (f" (95% CI {_pct(ci[0], 1)}–{_pct(ci[1], 1)}; band {_pct(g['min_longer_share'])}–{_pct(g['max_longer_share'])})" if ci else "")
             + f"; chosen responses were on average <b>{skew['mean_length_diff']:+.0f}</b> characters longer than rejected ones. "
             "Whatever its cause, DPO learns this: <code>length_skew</code> gates pair exports unless <code>--balance-length</code>.")
    coef = "not estimated: " + escape(taste.get("reason", "")) if taste.get("coef") is None else (
        f"<b>{taste['coef']:.2f}</b> ± {taste['coef_se']:.2f} (p = {taste['p_value']:.1g}; control: {escape(taste['control'])}; flagged beyond ±{g['max_length_coef']})"
    )
    text = ("<code>length_taste</code>: do annotators prefer length beyond what quality explains? The length coefficient of a logistic regression "
            "that also knows the other annotators' verdict on the same pair and the order shown (in the spirit of length-controlled AlpacaEval): " + coef + ".")
    states = " · ".join(f"{name} " + ("<span class=bad>flagged</span>" if part["flagged"] else "<span class=ok>ok</span>") for name, part in (("length_skew", skew), ("length_taste", taste)))
    return f"<h2>Length: {states}</h2><p>{share}</p><p>{text}</p><figure>{_plot_length(skew['histogram'])}</figure>"


def _judges(report: dict) -> str:
    rows = []
    for kind, j in report["judges"].items():
        if "human" not in j:
            rows.append(f"<tr><td>{kind}</td><td colspan=5 class=note>{escape(j['note'])}</td></tr>")
            continue
        vs = j["human_vs_model"]
        rows.append(
            f"<tr><td>{kind}</td><td class=num>{j['human_labels']:,}</td><td class=num>{_num(j['human']['alpha'])}</td><td class=num>{j['model_labels']:,}</td>"
            f"<td class=num>{_num(j['model']['alpha'])}</td><td class=num>{vs['shared_items']:,}</td><td class=num>{_pct(vs['agreement'])}</td><td class=num>{_num(vs['kappa'])}</td></tr>"
        )
    if all("human" not in j for j in report["judges"].values()):
        return ""
    return (
        "<h2>Human and model judges</h2><p class=note>Human judges (annotator_kind user or expert) and model judges (annotator_kind model) apart; "
        "on items both judged, how often the model judges' majority verdict matches the humans'.</p>"
        "<table><tr><th>kind</th><th class=num>human labels</th><th class=num>human α</th><th class=num>model labels</th><th class=num>model α</th>"
        "<th class=num>shared items</th><th class=num>model = humans</th><th class=num>Cohen κ</th></tr>" + "".join(rows) + "</table>"
    )


def _timestamps(report: dict) -> str:
    t = report["timestamps"]
    if not t["implausible"]:
        return ""
    examples = "".join(
        f"<tr><td>{kind}</td><td>{escape(e['event_id'])}</td><td>{escape(e['ts'])}</td><td>{escape(e['ingested_at'])}</td></tr>"
        for kind in ("thumbs", "pairwise") for e in t[kind]["examples"]
    )
    return (
        f"<h2>Implausible timestamps: {t['implausible']:,} left out</h2><p class=note>{escape(t['note'])}</p>"
        f"<table><tr><th>kind</th><th>event</th><th>ts</th><th>received</th></tr>{examples}</table>"
    )


def _labels_over_time(report: dict) -> str:
    li, d = report["bias"]["label_imbalance"], report["bias"]["drift"]
    if li.get("ratio") is None and not d["thumbs_by_day"]:
        return f"<h2>Label balance</h2><p class=note>{escape(li.get('reason', 'no thumbs feedback'))}</p>"
    weights = li.get("kto_weights")
    kto = (
        f" For KTO, set <code>desirable_weight</code> in [{weights['desirable_weight'][0]:.2f}, {weights['desirable_weight'][1]:.2f}] "
        f"<i>or</i> <code>undesirable_weight</code> in [{weights['undesirable_weight'][0]:.2f}, {weights['undesirable_weight'][1]:.2f}] "
        "to bring the weighted ratio into TRL's recommended 1:1 – 4:3 band."
        if weights
        else ""
    )
    ratio = "" if li.get("ratio") is None else f"Thumbs up : down is <b>{li['ratio']:.2f} : 1</b> ({li['up']:,} up, {li['down']:,} down).{kto}"
    drift = (
        "<p class=bad>Drift: " + escape("; ".join(d["reasons"])) + "</p>" if d["reasons"] else "<p class=note>No significant drift by day or model version.</p>"
    )
    models = "".join(f"<tr><td>{escape(r['group'])}</td><td class=num>{r['n']:,}</td><td class=num>{_pct(r['rate'])}</td></tr>" for r in d["thumbs_by_model"])
    table = f"<table><tr><th>model version</th><th class=num>thumbs</th><th class=num>up rate</th></tr>{models}</table>" if models else ""
    return f"<h2>Label balance over time</h2><p>{ratio}</p><figure>{_plot_balance(d['thumbs_by_day'], d['pairwise_by_day_first_shown'])}</figure>{drift}{table}"


def _agreement(report: dict) -> str:
    rows = []
    for kind, a in report["agreement"].items():
        ci = f"[{a['alpha_ci'][0]:.2f}, {a['alpha_ci'][1]:.2f}]" if a["alpha_ci"] else "—"
        rows.append(
            f"<tr><td>{kind}</td><td class=num>{a['n']:,}</td><td class=num>{a['n_items']:,}</td><td class=num>{a['n_pairable_items']:,}</td>"
            f"<td class=num>{a['n_annotators']:,}</td><td class=num>{_num(a['alpha'])}</td><td class=num>{ci}</td>"
            f"<td class=num>{_num(a['fleiss_kappa'])}</td><td class=num>{_num(a['cohen_kappa'])}</td></tr>"
        )
    return (
        "<h2>Inter-annotator agreement</h2><p class=note>Krippendorff's α (nominal; pairwise labels are "
        "which response won, or a tie) with a 95% bootstrap interval over items. Below about 0.4, DPO will fit noise: "
        "prefer IPO, or collect more overlapping labels.</p><table><tr><th>kind</th><th class=num>labels</th><th class=num>items</th><th class=num>items with ≥2 labels</th>"
        "<th class=num>annotators</th><th class=num>α</th><th class=num>95% CI</th><th class=num>Fleiss κ</th><th class=num>Cohen κ</th></tr>" + "".join(rows) + "</table>"
    )


def _hygiene(report: dict) -> str:
    dup, con = report["bias"]["duplicates"], report["bias"]["contradictions"]
    if "thumbs" not in dup:
        return ""
    rows = "".join(
        f"<tr><td>{k}</td><td class=num>{dup[k]['events']:,}</td><td class=num>{dup[k]['current']:,}</td><td class=num>{dup[k]['retries']:,}</td>"
        f"<td class=num>{dup[k]['content_duplicates']:,}</td><td class=num>{con[k]:,}</td></tr>"
        for k in ("thumbs", "pairwise")
    )
    return (
        "<h2>Duplicates and contradictions</h2><table><tr><th>kind</th><th class=num>events</th><th class=num>current labels</th><th class=num>producer retries</th>"
        "<th class=num>exact duplicates</th><th class=num>contradictions</th></tr>" + rows + "</table>"
        f"<p class=note>Current labels: the latest per annotator and item (earlier ones were superseded). Exact duplicates: same annotator, item, "
        f"label and time under another event id. Contradictions: same annotator, item and time, different labels. Dead letters received in the window: {report['store_health']['dead_letters']:,}.</p>"
    )


def _expectations(report: dict) -> str:
    e = report["expectations"]
    if "suites" not in e:
        return f"<h2>Expectations</h2><p class=note>{escape(str(e.get('skipped', {}).get('all', 'not run')))}</p>"
    failed, passed = [], []
    for table, results in e["suites"].items():
        for r in results:
            detail = f"{r['unexpected_count']:,} unexpected" if r.get("unexpected_count") else ""
            if r.get("partial_unexpected_list"):
                detail += " e.g. " + ", ".join(r["partial_unexpected_list"][:3])
            state = "<span class=ok>pass</span>" if r["success"] else "<span class=bad>FAIL</span>"
            row = f"<tr><td>{table}</td><td>{escape(r['name'])}</td><td>{state}</td><td>{escape(detail or r.get('exception') or '')}</td></tr>"
            (passed if r["success"] else failed).append(row)
    head = "<tr><th>table</th><th>expectation</th><th>result</th><th>detail</th></tr>"
    skipped = "".join(f"<p class=note>{escape(t)}: {escape(why)}</p>" for t, why in e.get("skipped", {}).items())
    failed_table = f"<table>{head}{''.join(failed)}</table>" if failed else ""
    passed_table = f"<details><summary>{len(passed)} passing expectations</summary><table>{head}{''.join(passed)}</table></details>" if passed else ""
    return (
        f"<h2>Expectations: {e['passed']}/{e['evaluated']} passed</h2><p class=note>{escape(e['engine'])}: "
        f"schema, nulls, value sets, non-empty text, unique event ids.</p>{skipped}{failed_table}{passed_table}"
    )


def _missing(report: dict) -> str:
    reasons = [f"{k} agreement: {r}" for k, a in report["agreement"].items() for r in a["reasons"] if "Cohen's kappa is for two" not in r]
    reasons += [f"{name.replace('_', ' ')}: {b['reason']}" for name, b in report["bias"].items() if isinstance(b, dict) and b.get("reason")]
    reasons += [c["note"] for c in report["counts"].values() if c.get("note")]
    reasons += [f"{item['check']}: {item['reason']}" for item in report["gate"]["not_checked"]]
    if not reasons:
        return ""
    return "<h2>What could not be computed</h2><ul>" + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>"


def _settings(report: dict) -> str:
    g = report["settings"]["gate"]
    cells = "".join(f"<tr><td><code>{escape(k)}</code></td><td>{escape(str(v))}</td></tr>" for k, v in g.items())
    return (
        f"<h2>Thresholds</h2><details><summary>[quality.gate] in the config file; bootstrap resamples: {report['settings']['bootstrap']}</summary>"
        f"<table>{cells}</table></details>"
    )


# --- plots ------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _svg(fig) -> str:
    import matplotlib

    fig.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, in the page's font
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # no timestamp: same report, same bytes
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _plot_reliability(annotators: list[dict]) -> str:
    fig, ax = _figure(10, 0.8 + 0.28 * len(annotators))
    names = [a["annotator_id"] for a in annotators][::-1]
    values = [a["reliability"] or 0.0 for a in annotators][::-1]
    colors = [BAD if a["flags"] else (MUTED if a["reliability"] is None else GOOD) for a in annotators][::-1]
    ax.barh(names, values, color=colors, height=0.7)
    for y, a in enumerate(annotators[::-1]):
        label = ", ".join(a["flags"]) if a["flags"] else ("no overlapping labels" if a["reliability"] is None else "")
        value = a["reliability"] or 0.0
        # The axis is the value's own range, 0..1: labels of long bars go inside them.
        inside = value > 0.6
        ax.text(value - 0.01 if inside else value + 0.01, y, label, va="center", ha="right" if inside else "left", fontsize=8,
                color="white" if inside else (BAD if a["flags"] else MUTED))
    ax.set_xlim(0, 1)
    ax.set_xlabel("reliability (Dawid-Skene informedness, 0 = chance, 1 = perfect)")
    ax.tick_params(axis="y", labelsize=8)
    return _svg(fig)


def _plot_position(rows: list[tuple[str, dict]], population: dict, margin: float) -> str:
    fig, ax = _figure(10, 0.8 + 0.28 * len(rows))
    rows = sorted(rows, key=lambda r: r[1]["first_shown_rate"])
    ax.axvspan(0.5 - margin, 0.5 + margin, color="#eaeef2", zorder=0, label=f"50% ± {margin:.0%}")
    ax.axvline(0.5, color=MUTED, lw=1)
    if population.get("first_shown_rate") is not None:
        ax.axvline(population["first_shown_rate"], color=INK, lw=1, ls="--", label=f"all annotators {population['first_shown_rate']:.1%}")
    for y, (name, p) in enumerate(rows):
        low, high = p["first_shown_ci"]
        biased = abs(p["first_shown_rate"] - 0.5) >= margin
        color = BAD if biased else GOOD
        ax.errorbar(p["first_shown_rate"], y, xerr=[[p["first_shown_rate"] - low], [high - p["first_shown_rate"]]], fmt="o", color=color, ms=4, capsize=2)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of decided judgements where the first-shown response won (95% CI)")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _svg(fig)


def _plot_length(histogram: dict) -> str:
    fig, ax = _figure(10, 3.2)
    edges, counts = histogram["edges"], histogram["counts"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    ax.bar(centres, counts, width=width * 0.95, color=[GOOD if c > 0 else (MUTED if c == 0 else "#57606a") for c in centres])
    ax.axvline(0, color=INK, lw=1)
    ax.set_xlabel("chosen minus rejected length (characters; right of 0: the longer response won)")
    ax.set_ylabel("judgements")
    return _svg(fig)


def _plot_balance(thumbs_by_day: list[dict], first_by_day: list[dict]) -> str:
    fig, ax = _figure(10, 3.2)
    days = sorted({r["group"] for r in thumbs_by_day} | {r["group"] for r in first_by_day})
    x = {d: i for i, d in enumerate(days)}
    volume = ax.twinx()  # labels per day, faint, so a wild rate on a thin day reads as such
    volume.bar([x[r["group"]] for r in thumbs_by_day], [r["n"] for r in thumbs_by_day], color="#eaeef2", width=0.6, zorder=0)
    volume.set_ylabel("thumbs per day", color=MUTED)
    volume.tick_params(axis="y", colors=MUTED, labelsize=8)
    volume.spines["top"].set_visible(False)
    ax.set_zorder(volume.get_zorder() + 1)
    ax.patch.set_visible(False)
    if thumbs_by_day:
        ax.plot([x[r["group"]] for r in thumbs_by_day], [r["rate"] for r in thumbs_by_day], marker="o", color=GOOD, label="thumbs-up rate")
    if first_by_day:
        ax.plot([x[r["group"]] for r in first_by_day], [r["rate"] for r in first_by_day], marker="s", color=WARN, label="first-shown won (pairwise)")
    ax.axhline(0.5, color=MUTED, lw=1, ls=":")
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate per UTC day")
    step = max(1, len(days) // 14)
    ax.set_xticks(range(0, len(days), step), [d[5:] for d in days[::step]], fontsize=8)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    return _svg(fig)


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:.{digits}%}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"
