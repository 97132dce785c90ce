#!/usr/bin/env bash
# mailroom's throughput with 1, 2, 4 and 8 workers, each on its own machine (network
# namespace; root), against a 3-member Corral ensemble on three more, with no chaos. Writes
# docs/mailroom-scaling.json and docs/mailroom-scaling.svg.
#
#   scripts/mailroom-scaling.sh INBOX MODEL [WORK_MS]
#
# WORK_MS (default 10) is time each worker spends per email on top of the classifier, as a
# slower classifier would: with none, 2 cores bound the classifier itself and the plot says
# more about this machine than about the coordination.
#   scripts/mailroom-scaling.sh --plot     redraw the SVG from the JSON only
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/mailroom-scaling.json
plot() {
    python3 - "$out" docs/mailroom-scaling.svg <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
runs = data["runs"]
w, h, pad = 480, 300, 50
top = max(r["emails_per_s"] for r in runs) * 1.15
most = max(r["workers"] for r in runs)
def x(n): return pad + (w - 2 * pad) * (n - 1) / (most - 1)
def y(v): return h - pad - (h - 2 * pad) * v / top
ideal = runs[0]["emails_per_s"]
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{w/2}" y="20" text-anchor="middle" font-size="13">mailroom: emails/s by workers, each on its own machine</text>',
         f'<text x="{w/2}" y="36" text-anchor="middle" font-size="11">({data["work_ms"]} ms per email on top of the classifier)</text>',
         f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
         f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>']
line = " ".join(f"{x(r['workers']):.1f},{y(r['emails_per_s']):.1f}" for r in runs)
linear = " ".join(f"{x(r['workers']):.1f},{y(min(top, ideal * r['workers'])):.1f}" for r in runs)
parts.append(f'<polyline points="{linear}" fill="none" stroke="#aaa" stroke-dasharray="4 3"/>')
parts.append(f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>')
for r in runs:
    parts.append(f'<circle cx="{x(r["workers"]):.1f}" cy="{y(r["emails_per_s"]):.1f}" r="3" fill="#1565c0"/>')
    parts.append(f'<text x="{x(r["workers"]):.1f}" y="{h-pad+16}" text-anchor="middle">{r["workers"]}</text>')
    parts.append(f'<text x="{x(r["workers"]):.1f}" y="{y(r["emails_per_s"])-8:.1f}" text-anchor="middle">{r["emails_per_s"]:.0f}</text>')
parts.append(f'<text x="{w/2}" y="{h-12}" text-anchor="middle">workers (dashed: linear from one)</text>')
parts.append('</svg>')
open(sys.argv[2], "w").write("\n".join(parts) + "\n")
PY
}
if [ "${1:-}" = "--plot" ]; then
    plot
    exit 0
fi
inbox="$1" model="$2" work_ms="${3:-10}"
cargo build -q --release -p corral -p mailroom
runs=()
for n in 1 2 4 8; do
    line=$(target/release/mailroom chaos --machines --inbox "$inbox" --model "$model" \
        --corral target/release/corral --workers "$n" --worker-kills 0 --partitions 0 \
        --no-member-kill --work-ms "$work_ms" --seed 1 | grep 'emails/s')
    rate=$(sed -E 's/.*; ([0-9.]+) emails\/s.*/\1/' <<< "$line")
    echo "$n workers: $rate emails/s"
    runs+=("{\"workers\": $n, \"emails_per_s\": $rate}")
done
printf '{"work_ms": %s, "runs": [%s]}\n' "$work_ms" "$(IFS=,; echo "${runs[*]}")" > "$out"
plot
echo "wrote $out and docs/mailroom-scaling.svg"
