"""Drives the demo through the public HTTP API, as an organiser and its participants would.

Creates a challenge with an MRI-to-CT phase per anatomy (phantom brain and pelvis) and a
CBCT-to-CT phase, uploads the example algorithm tarballs (chunked upload), submits them, shows
progress, prints the leaderboards. The participants: the fitted baseline (examples/algorithms/
python) and three trivial outputs (all zeros, a copy of the input, a constant soft-tissue
value) that any real algorithm must beat; the demo says so when a leaderboard disagrees.
Run by scripts/demo.sh (which starts the API and a worker first).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ORGANIZER = ("organizer", "organizer@demo.local")
BASELINE = "python"
TRIVIAL = ("trivial-zeros", "trivial-copy", "trivial-soft-tissue")
PARTICIPANTS = {"alice": BASELINE, "bob": "trivial-soft-tissue", "carol": "trivial-zeros",
                "dave": "trivial-copy"}
PASSWORD = "demo-password-1"  # noqa: S105  (demo accounts, printed to the user)


@dataclass(frozen=True)
class DemoPhase:
    title: str
    anatomy: str
    task: str  # "mri" or "cbct": the input modality
    plans: bool  # photon and proton plans: dose metrics on the leaderboard
    batch_size: int
    year: str = "2023"  # SynthRAD's image metrics: 2023 (SSIM) or 2025 (MS-SSIM)
    ranking: str = "mean_rank"


MRI_PHASES = {
    "brain": DemoPhase("Brain (MRI to CT)", "brain", "mri", True, 1),
    "pelvis": DemoPhase("Pelvis (MRI to CT)", "pelvis", "mri", False, 3),
}


def cbct_phase() -> tuple[str, DemoPhase]:
    """The CBCT phase: thorax, a SynthRAD2025 CBCT region."""
    return "cbct-thorax", DemoPhase("Thorax (CBCT to CT)", "thorax", "cbct", False, 3, "2025",
                                    "grouped_normalized_sum")


def scoring(year: str) -> tuple[str, list[str]]:
    """A phantom phase's metric profile and geometry columns: the phantom profile
    (HU-threshold geometry: dice_hu, hd95_hu). The official profile (TotalSegmentator) needs
    weights the demo cannot download."""
    return f"synthrad{year}-phantom", ["dice_hu", "hd95_hu"]


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def client(base: str, username: str, email: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=600)
    r = c.post("/api/auth/register", json={"email": email, "username": username,
                                           "password": PASSWORD})
    if r.status_code >= 400:  # exists from an earlier run
        c.post("/api/auth/login", json={"username": username, "password": PASSWORD}) \
            .raise_for_status()
    return c


def ok(r: httpx.Response) -> dict:  # type: ignore[type-arg]
    if r.status_code >= 400:
        sys.exit(f"[demo] {r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json() if r.content else {}


def wait_import(org: httpx.Client, ds: str, job: dict) -> None:  # type: ignore[type-arg]
    """The import runs on the worker: show its progress until it ends."""
    t0, shown = time.monotonic(), None
    while job["status"] not in ("succeeded", "failed"):
        time.sleep(2)
        job = ok(org.get(f"/api/datasets/{ds}/imports/{job['id']}"))
        if (job["status"], job["cases_done"]) != shown:
            shown = (job["status"], job["cases_done"])
            say(f"  {ds}: {job['status']}, case {job['cases_done']}/"
                f"{job['cases_total'] or '?'} ({time.monotonic() - t0:.0f} s)")
    if job["status"] == "failed":
        sys.exit(f"[demo] the import into {ds} failed: {job['message']} {job['errors']}")


def setup_challenge(org: httpx.Client, slug: str, cases: int, size: str,
                    phases: dict[str, DemoPhase]) -> None:
    if org.get(f"/api/challenges/{slug}").status_code == 200:
        say(f"challenge {slug} exists")
        return
    ok(org.post("/api/challenges", json={
        "slug": slug, "title": "SynthArena demo",
        "description": "MRI-to-CT and CBCT-to-CT synthesis on phantom cases."}))
    for phase_slug, ph in phases.items():
        ds = f"{slug}-{phase_slug}"
        ok(org.post("/api/datasets", json={"slug": ds, "title": f"Phantom {ph.title}",
                                           "challenge": slug}))
        what = (f"generating {cases} phantom {ph.anatomy} {ph.task.upper()} cases ({size})"
                + (" with photon and proton plans" if ph.plans else ""))
        say(what + (" - the plans take a few minutes" if ph.plans else ""))
        job = ok(org.post(f"/api/datasets/{ds}/imports", json={
            "source": "phantom", "anatomy": ph.anatomy, "cases": cases, "size": size,
            "seed": 1, "plans": ph.plans, **({"task": ph.task} if ph.task != "mri" else {})}))
        wait_import(org, ds, job)
        profile, geometry = scoring(ph.year)
        image = ["psnr", "ssim" if ph.year == "2023" else "ms_ssim"]
        ok(org.post(f"/api/challenges/{slug}/phases", json={
            "slug": phase_slug, "title": ph.title, "kind": "test", "dataset": ds,
            "is_open": True, "case_time_limit_s": 120, "memory_mb": 2048, "cpus": 1.0,
            "batch_size": ph.batch_size, "metric_profile": profile,
            "ranking_method": ph.ranking,
            # directions come from the evaluator's registry
            "extra_columns": [{"metric": m} for m in (
                *image, *geometry, *(("gamma_photon", "mae_target_proton") if ph.plans else ()))],
            "submissions_per_period": 100, "show_case_logs": True, "show_case_results": True}))


def upload(c: httpx.Client, tarball: Path, name: str) -> int:
    size = tarball.stat().st_size
    up = ok(c.post("/api/images/uploads", json={"name": name, "size_bytes": size}))
    chunk = min(up.get("max_chunk_bytes") or 64 << 20, 64 << 20)
    with tarball.open("rb") as fh:
        start = 0
        while start < size:
            data = fh.read(chunk)
            end = start + len(data) - 1
            ok(c.put(f"/api/images/uploads/{up['id']}", content=data,
                     headers={"Content-Range": f"bytes {start}-{end}/{size}",
                              "Content-Type": "application/octet-stream"}))
            start = end + 1
    image = ok(c.post(f"/api/images/uploads/{up['id']}/complete"))
    if image["status"] != "valid":
        sys.exit(f"[demo] image {name} rejected: {image['validation_message']}")
    return int(image["id"])


def progress_text(s: dict) -> str:  # type: ignore[type-arg]
    """One count per line: cases done (run, and scored where they succeeded) of all; the
    worker's step only where it adds something (its own counts would repeat ours)."""
    count = f"{s['cases_done']} of {s['cases_total']} cases done" if s["cases_total"] else ""
    step = s["current_step"] or ""
    if step.startswith(("running cases", "scoring (", "done", "failed")):
        step = ""
    return f"{s['status']:<10} " + "; ".join(x for x in (count, step) if x)


def print_leaderboard(board: dict, title: str, teams: dict[str, str]) -> None:  # type: ignore[type-arg]
    cols = [c["metric"] for c in board["columns"]]
    print(f"\nLeaderboard - {title} ({board['ranking_method']})")
    width = {m: max(10, len(m)) + 2 for m in cols}
    print(f"  {'rank':<5}{'user':<8}{'algorithm':<21}"
          + "".join(f"{m:>{width[m]}}" for m in cols))
    for row in board["rows"]:
        vals = "".join(f"{row['values'][m]:>{width[m]}.3f}" if row["values"][m] is not None
                       else f"{'-':>{width[m]}}" for m in cols)
        print(f"  {row['rank'] if row['rank'] is not None else '-':<5}"
              f"{row['username']:<8}{teams.get(row['username'], ''):<21}{vals}")
    ranks = {teams.get(r["username"]): r["rank"] for r in board["rows"]}
    base = ranks.get(BASELINE)
    beaten = [t for t in TRIVIAL if t in ranks and (base is None or ranks[t] is None
                                                    or ranks[t] <= base)]
    if beaten:  # a demo leaderboard must make sense: say so loudly when it does not
        say(f"WARNING: on {title} the baseline (rank {base}) does not rank above "
            f"{', '.join(beaten)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--examples", default="build/examples")
    ap.add_argument("--slug", default="demo")
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--size", default="small", help="phantom size: small | realistic")
    args = ap.parse_args()

    slug, cbct = cbct_phase()
    phases = {**MRI_PHASES, slug: cbct}
    org = client(args.url, *ORGANIZER)
    setup_challenge(org, args.slug, args.cases, args.size, phases)
    subs: dict[int, str] = {}
    for user, example in PARTICIPANTS.items():
        c = client(args.url, user, f"{user}@demo.local")
        c.post(f"/api/challenges/{args.slug}/register")
        say(f"{user} uploads {example}.tar.gz")
        image_id = upload(c, Path(args.examples) / f"{example}.tar.gz", f"{user}/{example}")
        for phase in phases:
            r = c.post(f"/api/challenges/{args.slug}/phases/{phase}/submissions",
                       json={"image_id": image_id, "comment": f"{example} example"})
            sub = ok(r)
            subs[int(sub["id"])] = f"{user:<6} {example:<20} {phase:<12}"
    say(f"submitted {len(subs)} submissions; progress:")
    done: set[int] = set()
    last: dict[int, str] = {}
    while len(done) < len(subs):
        time.sleep(1.0)
        for sid, label in subs.items():
            if sid in done:
                continue
            s = ok(org.get(f"/api/submissions/{sid}"))
            line = f"  #{sid} {label} {progress_text(s)}"
            if s["status"] in ("succeeded", "failed", "cancelled"):
                done.add(sid)
                if s["error_message"]:
                    line += f"  ({s['error_message']})"
            if last.get(sid) != line:  # print changes only
                last[sid] = line
                print(line, flush=True)
    for phase, ph in phases.items():
        board = ok(org.get(f"/api/challenges/{args.slug}/phases/{phase}/leaderboard"))
        print_leaderboard(board, ph.title, PARTICIPANTS)


if __name__ == "__main__":
    main()
