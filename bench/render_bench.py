"""Render throughput and CLI cold start, each against a baseline measured in the same run.

    .venv/bin/python bench/render_bench.py [--seconds 3] [--runs 21]

1. In-process: manifests rendered per second (spec already parsed; Jinja2 render, YAML parse, value
   substitution), per example; render + full validation; and the baseline, parsing the rendered
   manifest's YAML once with libyaml, with the ratio of render to baseline.
2. Cold start: wall time of `jobgen render jobs/cpu-ddp.yaml` as a new process, against the floor
   `python -c "import yaml"` with the same interpreter, runs interleaved; medians and their ratio.
   Two more baselines in the same runs: pydantic alone (import + one model), and every library
   render needs (click, Jinja2, PyYAML, pydantic + one model) with no jobgen code.

Targets (issue 11, docs/benchmarks.md): >= 1,000 renders/s; cold start <= 2x the floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def throughput(fn, seconds: float) -> float:
    fn()  # warm caches (templates, validators)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        count += 50
    return count / elapsed


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per throughput measurement")
    parser.add_argument("--runs", type=int, default=21, help="cold-start runs of each command")
    args = parser.parse_args()

    import yaml

    from jobgen.loader import load_spec
    from jobgen.render import dump_yaml, render
    from jobgen.validate import manifest_problems

    results: dict[str, object] = {"python": platform.python_version(), "machine": platform.machine()}
    rows = []
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        spec = load_spec(path)
        text = dump_yaml(render(spec))
        # Baseline: parsing the rendered manifest's YAML once with libyaml (what `kubectl apply -f` starts with).
        baseline = throughput(lambda text=text: yaml.load(text, Loader=yaml.CSafeLoader), args.seconds)
        rate = throughput(lambda spec=spec: render(spec), args.seconds)
        rate_validated = throughput(lambda spec=spec: manifest_problems(render(spec)), args.seconds)
        rows.append(
            {
                "spec": path.name,
                "renders_per_s": round(rate),
                "render_and_validate_per_s": round(rate_validated),
                "baseline_yaml_parse_per_s": round(baseline),
                "render_vs_baseline": round(rate / baseline, 2),
            }
        )
    results["throughput"] = rows

    jobgen = str(Path(sys.executable).parent / "jobgen")
    commands = {
        "floor": [sys.executable, "-c", "import yaml"],
        "help": [jobgen, "--help"],
        "render": [jobgen, "render", "jobs/cpu-ddp.yaml"],
        # what any pydantic-validated spec costs before jobgen's own code: the import and a first model
        "pydantic_floor": [sys.executable, "-c", "import pydantic\nclass M(pydantic.BaseModel):\n    x: int"],
        # every library `jobgen render` needs (click, Jinja2, PyYAML, pydantic + a first model), nothing of jobgen
        "libraries_floor": [
            sys.executable,
            "-c",
            "import click, jinja2, yaml, pydantic\nclass M(pydantic.BaseModel):\n    x: int",
        ],
    }
    for cmd in commands.values():
        wall(cmd)  # warm the page cache
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved, so the machine's load hits every command alike
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    floor = statistics.median(times["floor"])
    results["cold_start"] = {
        name: {
            "command": " ".join(["jobgen", *cmd[1:]]) if cmd[0] == jobgen else "python -c ...",
            "median_s": round(statistics.median(times[name]), 4),
            "ratio_to_floor": round(statistics.median(times[name]) / floor, 2),
        }
        for name, cmd in commands.items()
    }
    results["cold_start"]["runs"] = args.runs

    print(json.dumps(results, indent=2))
    worst = min(r["renders_per_s"] for r in rows)
    cs = results["cold_start"]
    ok_rate = worst >= 1000
    print(f"\nrender throughput: worst {worst}/s (target >= 1000): {'ok' if ok_rate else 'MISSED'}")
    ok_cold = True
    for name in ("help", "render"):
        ratio = cs[name]["ratio_to_floor"]
        ok_cold = ok_cold and ratio <= 2
        print(
            f"cold start `jobgen {name}`: {cs[name]['median_s']}s = {ratio}x the `import yaml` floor "
            f"{cs['floor']['median_s']}s (target <= 2x): {'ok' if ratio <= 2 else 'MISSED'}"
        )
    print(f"  (pydantic's own floor, import + one model: {cs['pydantic_floor']['ratio_to_floor']}x)")
    libs = cs["libraries_floor"]
    print(
        f"  (the libraries render imports, and nothing else: {libs['median_s']}s = {libs['ratio_to_floor']}x; "
        f"render = {cs['render']['median_s'] / libs['median_s']:.2f}x that)"
    )
    return 0 if ok_rate and ok_cold else 1


if __name__ == "__main__":
    sys.exit(main())
