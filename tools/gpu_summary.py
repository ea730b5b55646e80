"""Summarize the records of a GPU check run: one markdown row per run (family, params, status, device, metric)."""

import json
import sys
from pathlib import Path

from embsym_lib.families import get_family

rows = [
    "| family | run | status | device | wall (s) | primary metric | CUDA peak (MiB) |",
    "|---|---|---|---|---|---|---|",
]
for path in sorted(Path(sys.argv[1]).glob("*/*/record.json")):
    rec = json.loads(path.read_text())
    spec = get_family(rec["family"])
    metric = spec.primary_metric_of(rec["params"])
    value = rec.get("metrics", {}).get(metric)
    device = rec.get("device", {})
    rows.append(
        f"| {rec['family']} | {rec['run_id']} | {rec['status']}{' — ' + rec['error'][:80] if rec.get('error') else ''} "
        f"| {device.get('gpu') or device.get('device')} | {rec.get('runner_wall_time_s') or 0:.1f} "
        f"| {metric}={value if value is None else round(value, 4)} | {(rec.get('memory') or {}).get('cuda_peak_mib')} |"
    )
print("\n".join(rows))
