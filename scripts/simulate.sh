#!/usr/bin/env bash
# Deterministic simulation of a Corral ensemble (crates/sim): three members, their clients and a
# nemesis on simulated time, network and disks. Every seed is one exact, replayable history.
#
#   scripts/simulate.sh                 # seeds 1..200 (what CI runs), then the replay check, and
#                                       # seeds 1..100 with --reconfig
#   scripts/simulate.sh --seeds 2000    # a longer soak (also: --first-seed F)
#   scripts/simulate.sh --seed 52       # one seed: its trace hash, checked the same twice
#   scripts/simulate.sh --seed 52 --trace --log info   # ... with its trace and server logs
#   scripts/simulate.sh --broken drop-watch --tally     # how many seeds catch a planted bug
#   scripts/simulate.sh --reconfig --seeds 400          # with an operator changing the membership
#
# It prints "simulation: N seeds, K failures" and, for each failing seed, the command that
# replays it; it exits non-zero on any failure. Seeds in crates/sim/known-stalls that only
# stall (a liveness problem under investigation) are reported but not counted.
#
# The default run (CI's) also proves the checks can fail: each deliberately broken variant
# (corral_io::broken, compiled in only here, with the `broken` feature) must be caught within
# BROKEN_SEEDS seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

# tokio's select! picks among ready branches at random; with tokio_unstable, turmoil seeds that
# generator from the run's seed. Its own target directory keeps these flags from rebuilding the
# normal one.
export RUSTFLAGS="--cfg tokio_unstable"
export CARGO_TARGET_DIR="${CORRAL_SIM_TARGET:-target/sim}"
cargo build --release --quiet -p corral-sim --features broken
sim="$CARGO_TARGET_DIR/release/corral-sim"

single=""
for arg in "$@"; do
    if [[ "$arg" == "--seed" ]]; then single=yes; fi
done

if [[ -n "$single" ]]; then
    first=$("$sim" "$@" | tee /dev/stderr | grep 'trace hash' || true)
    second=$("$sim" "$@" 2>/dev/null | grep 'trace hash' || true)
    if [[ -z "$first" || "$first" != "$second" ]]; then
        echo "replay check FAILED: the same seed gave two traces: '$first' vs '$second'"
        exit 1
    fi
    echo "replay check: the seed gave the same trace twice"
    exit 0
fi

for arg in "$@"; do
    if [[ "$arg" == "--broken" ]]; then exec "$sim" "$@"; fi
done

ci=""
if [[ $# -eq 0 ]]; then
    ci=yes
    set -- --seeds 200
fi
"$sim" --known-stalls crates/sim/known-stalls "$@"
# Determinism, checked every run: seeds replayed give the same trace hash.
for seed in 2 52; do
    a=$("$sim" --seed "$seed" | grep 'trace hash')
    b=$("$sim" --seed "$seed" | grep 'trace hash')
    if [[ "$a" != "$b" ]]; then
        echo "replay check FAILED for seed $seed: '$a' vs '$b'"
        exit 1
    fi
done
echo "replay check: seeds 2 and 52 gave the same trace twice"

if [[ -n "$ci" ]]; then
    # Membership changes under the same faults: an operator removes members and adds them back.
    "$sim" --reconfig --seeds 100
    a=$("$sim" --reconfig --seed 7 | grep 'trace hash')
    b=$("$sim" --reconfig --seed 7 | grep 'trace hash')
    if [[ "$a" != "$b" ]]; then
        echo "replay check FAILED for seed 7 with --reconfig: '$a' vs '$b'"
        exit 1
    fi
    BROKEN_SEEDS=100
    for variant in ack-before-fsync skip-serving-rule apply-twice drop-watch; do
        "$sim" --broken "$variant" --seeds "$BROKEN_SEEDS" || {
            echo "a planted bug went unnoticed: $variant"
            exit 1
        }
    done
    echo "broken variants: all caught within $BROKEN_SEEDS seeds"
    # The real bugs the simulation found, put back: each still caught by its seed (the fourth,
    # resume-leadership, needs a history too rare to hunt here; docs/simulation.md, bug 3).
    for found in purge-misread:9 refuse-pending:15 unbounded-log-write:68; do
        "$sim" --broken "${found%%:*}" --first-seed "${found##*:}" --seeds 1 || {
            echo "a fixed bug, put back, went unnoticed by its seed: $found"
            exit 1
        }
    done
    echo "found bugs: each, put back, caught again by its seed"
fi
