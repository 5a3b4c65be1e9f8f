"""Time listing a TAU22-sized dataset: 150,000 metadata rows, placeholder (empty) audio files.

    python benchmarks/datasets.py [--rows 150000] [--dir PATH] [--repeat 3]

The layout is created once (in a temporary folder, or in --dir, where it is reused by later runs).
Prints the time of `tau22` listing (metadata + one scandir) and of the core's fingerprint (one
os.stat per clip), best of --repeat. Target: listing + fingerprint well under 5 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from asc_bench.api import DatasetRequest
from asc_bench_plugins.datasets import tau22

FOLDER = "TAU-urban-acoustic-scenes-2022-mobile-development"
SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
DEVICES = ("a", "b", "c", "s1", "s2", "s3")


def make_layout(parent: Path, rows: int) -> Path:
    base = parent / FOLDER
    marker = base / f".complete-{rows}"
    if marker.exists():
        return base
    if base.exists():
        shutil.rmtree(base)
    audio = base / "audio"
    audio.mkdir(parents=True)
    (base / "evaluation_setup").mkdir()
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    train, evaluate = ["filename\tscene_label"], ["filename\tscene_label"]
    for i in range(rows):
        scene, city, device = SCENES[i % 10], CITIES[(i // 10) % 10], DEVICES[(i // 100) % 6]
        location = 1000 + (i // 600)
        rel = f"audio/{scene}-{city}-{location}-{(i // 10) * 10}-{i % 10}-{device}.wav"
        os.close(os.open(audio / rel[6:], os.O_CREAT | os.O_WRONLY, 0o644))
        meta.append(f"{rel}\t{scene}\t{city}-{location}\t{device}")
        (evaluate if location % 10 < 3 else train).append(f"{rel}\t{scene}")
    (base / "meta.csv").write_text("\n".join(meta) + "\n")
    (base / "evaluation_setup" / "fold1_train.csv").write_text("\n".join(train) + "\n")
    (base / "evaluation_setup" / "fold1_evaluate.csv").write_text("\n".join(evaluate) + "\n")
    marker.touch()
    return base



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--dir", type=Path, default=None, help="keep the layout here and reuse it")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = None
    parent = args.dir
    if parent is None:
        tmp = tempfile.TemporaryDirectory(prefix="asc-bench-tau22-")
        parent = Path(tmp.name)
    parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = make_layout(parent, args.rows)
    print(f"layout: {args.rows:,} rows at {base} ({time.perf_counter() - t0:.1f} s to create or find)")
    from asc_bench.data.listing import fingerprints, paused_gc

    def listing() -> list:
        with paused_gc():                     # as the core's list_clips runs every adapter
            return tau22.build(request)

    request = DatasetRequest(root=base, options={}, cache_dir=parent / "cache")
    best = {"listing": [float("inf")] * 2, "fingerprint": [float("inf")] * 2}   # [wall, cpu] seconds
    clips = []
    for _ in range(args.repeat):
        for name, step in (("listing", listing), ("fingerprint", lambda: fingerprints(clips))):
            w, c = time.perf_counter(), time.process_time()
            out = step()
            best[name] = [min(best[name][0], time.perf_counter() - w), min(best[name][1], time.process_time() - c)]
            if name == "listing":
                clips = out
    # CPU time is reported too: on a shared machine, wall time includes waiting for a core.
    print(f"tau22 listing: {len(clips):,} clips in {best['listing'][0]:.2f} s wall, {best['listing'][1]:.2f} s CPU "
          f"(best of {args.repeat})")
    print(f"fingerprint ({fingerprints.__module__}.{fingerprints.__name__}): {best['fingerprint'][0]:.2f} s wall, "
          f"{best['fingerprint'][1]:.2f} s CPU")
    total = best["listing"][0] + best["fingerprint"][0]
    print(f"listing + fingerprint: {total:.2f} s wall ({'OK' if total < 5 else 'OVER'} against the 5 s target), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
