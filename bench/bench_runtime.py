"""`--runtime auto` on the five real OCR exports: its choice against Paddle's defaults, in one run.

    uv run --extra cpu python bench/bench_runtime.py [--runs 11] [--tune-runs 7] [--threads 1]

For each model (PP-OCRv5 mobile det/rec, PaddleX PIR exports; PP-OCRv4 det/rec and the
v2 text-direction classifier, pdmodel exports published with PaddleX-style configs
written from rapidocr's settings) it publishes the export with ``--runtime auto`` into
a scratch repository, then times the version's sample (the opt shape of its
inference.yml) with Paddle's default settings and with the chosen ones, alternating
the two ``--runs`` times after 5 untimed runs each, and prints the medians side by
side with their ratio. A default that cannot run the model says why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench._paddle import quiet

quiet()

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.model import formats  # noqa: E402
from workbench.model.ocr_exports import fetch_ocr_exports, write_legacy_configs  # noqa: E402
from workbench.model.repository import ModelRepository  # noqa: E402
from workbench.model.runtime_settings import RuntimeSettings  # noqa: E402
from workbench.runtime.device import Device  # noqa: E402
from workbench.runtime.paddle import PaddlePredictor, PaddleProbe  # noqa: E402

WARMUP = 5  # untimed runs per predictor first, as the tuner does


def _p50_ms(predictor: PaddlePredictor, sample: dict, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.run(sample)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="timed runs per setting (alternating)")
    parser.add_argument("--tune-runs", type=int, default=7, help="timed rounds per candidate while tuning")
    parser.add_argument("--threads", type=int, default=1, help="CPU math threads (loader default)")
    args = parser.parse_args()

    exports = fetch_ocr_exports()
    scratch = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    configs = write_legacy_configs(exports, scratch / "configs")
    models = [
        ("PP-OCRv5_mobile_det", "ocr-det", "5.0.0", exports.v5_det, None),
        ("PP-OCRv5_mobile_rec", "ocr-rec", "5.0.0", exports.v5_rec, None),
        ("PP-OCRv4_mobile_det", "ocr-det", "4.0.0", exports.v4_det, configs["det"]),
        ("PP-OCRv4_mobile_rec", "ocr-rec", "4.0.0", exports.v4_rec, configs["rec"]),
        ("ch_ppocr_mobile_v2_cls", "ocr-cls", "2.0.0", exports.v2_cls, configs["cls"]),
    ]
    repo = ModelRepository(scratch / "repo")
    probe = PaddleProbe(cpu_threads=args.threads)
    rows = []
    for label, model, version, source, config in models:
        started = time.perf_counter()
        manifest = repo.publish(model, version, source, probe=probe, runtime="auto", config=config,
                                tuning_runs=args.tune_runs)
        tuned_s = time.perf_counter() - started
        path = repo.path(model, version)
        files = formats.detect(path)
        sample = manifest.load_sample(path)
        chosen = PaddlePredictor.open(
            files, Device("cpu"), cpu_threads=args.threads, settings=manifest.runtime
        )
        try:
            default: PaddlePredictor | None = PaddlePredictor.open(
                files, Device("cpu"), cpu_threads=args.threads, settings=RuntimeSettings()
            )
            for _ in range(WARMUP):
                default.run(sample)
            why = ""
        except WorkbenchError as exc:
            default, why = None, str(exc)
        for _ in range(WARMUP):
            chosen.run(sample)
        d_times: list[float] = []
        c_times: list[float] = []
        for _ in range(args.runs):
            if default is not None:
                d_times += _p50_ms(default, sample, 1)
            c_times += _p50_ms(chosen, sample, 1)
        dropped = [f"{t.settings.describe()}: {t.reason[:70]}" for t in manifest.runtime_trials if not t.ok]
        trials = ", ".join(
            f"{t.settings.describe()}={t.p50_ms:.1f}" for t in manifest.runtime_trials if t.ok and t.p50_ms
        )
        rows.append((label, next(iter(sample.values())).shape, manifest.runtime.describe(), d_times, c_times,
                     why, dropped, trials, tuned_s))
        for p in (chosen, default):
            if p is not None:
                p.release()

    print(f"\nruntime auto vs Paddle defaults (CPU, {args.threads} math thread(s), p50 of {args.runs} "
          f"alternating runs; tuning p50 of {args.tune_runs})\n")
    print(f"{'model':<24}{'sample':<20}{'auto choice':<26}{'default ms':>12}{'auto ms':>10}{'ratio':>8}")
    for label, shape, choice, d, c, _why, _dropped, _trials, _ in rows:
        c50 = statistics.median(c)
        if d:
            d50 = statistics.median(d)
            print(f"{label:<24}{shape!s:<20}{choice:<26}{d50:>12.1f}{c50:>10.1f}{d50 / c50:>7.2f}x")
        else:
            print(f"{label:<24}{shape!s:<20}{choice:<26}{'fails':>12}{c50:>10.1f}{'-':>8}")
    print()
    for label, _shape, _choice, _d, _c, why, dropped, trials, tuned_s in rows:
        print(f"{label}: tuned in {tuned_s:.0f} s; candidates (p50 ms while tuning): {trials}")
        for line in dropped:
            print(f"    dropped {line}")
        if why:
            print(f"    default fails: {why[:160]}")


if __name__ == "__main__":
    main()
