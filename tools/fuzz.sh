#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after
# the other, and prints one line per target: executions, seconds, coverage,
# corpus size, crashes. Exits non-zero when any target crashed; the crashing
# input is in fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>`
# replays it.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
#
# On the stable toolchain (no nightly here): cargo-fuzz builds with libFuzzer's
# sanitizer-coverage through plain -C flags, which stable rustc accepts; only the
# sanitizers (-Zsanitizer=address, the default) and -Zbuild-std need nightly. So
# every run uses `--sanitizer none`: panics, failed assertions, overflow checks and
# debug assertions (cargo-fuzz keeps them on in its release build) are what is
# caught, not undefined behaviour in unsafe code. No RUSTC_BOOTSTRAP is needed.
#
# Corpora persist in fuzz/corpus/<target>/ (ignored by git), so a second run
# starts where the first stopped. The libFuzzer build has a target dir of its own
# (CARGO_FUZZ_TARGET_DIR, default fuzz/target): its instrumented artifacts are
# never reusable by a normal build. One job per target (-jobs is not used): the
# machines here have two cores, shared.
set -euo pipefail

secs="${1:-60}"
shift || true
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

target_dir="${CARGO_FUZZ_TARGET_DIR:-$here/fuzz/target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

mkdir -p logs
cargo fuzz build --sanitizer none --target-dir "$target_dir" >&2

failed=0
printf '%-16s %12s %6s %8s %8s %7s %s\n' target execs secs cov ft corpus crashes
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="logs/$t.log"
    status=0
    # -timeout: one input taking 30 s is a hang worth reporting; -rss_limit_mb: the
    # HTTP target holds a whole cluster.
    cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -oP 'stat::number_of_executed_units:\s*\K[0-9]+' "$log" | tail -1 || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -oP 'cov: \K[0-9]+' <<<"$last" || true)
    ft=$(grep -oP 'ft: \K[0-9]+' <<<"$last" || true)
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=0
    if [ "$status" -ne 0 ]; then
        crashes=1
        failed=1
    fi
    printf '%-16s %12s %6s %8s %8s %7s %s\n' "$t" "${execs:-?}" "$secs" "${cov:-?}" "${ft:-?}" "$corpus" \
        "$crashes$([ "$crashes" -ne 0 ] && echo " (see fuzz/$log, fuzz/artifacts/$t/)")"
done
exit "$failed"
