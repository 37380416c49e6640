#!/usr/bin/env bash
# Smoke-fuzz every target in fuzz/Cargo.toml for FUZZ_SECONDS (default 20) seconds each, then
# replay every saved crash input under fuzz/regressions/<target>/. Exits non-zero on any crash.
#
# New inputs found while fuzzing go to a scratch directory, so the checked-in seed corpus
# (fuzz/corpus/<target>/) is read but never written.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Runs `cargo fuzz run` with its output in a log; prints the log's tail on failure.
run() {
    local target="$1" log="$2"
    shift 2
    if ! cargo fuzz run -s none "$target" "$@" >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "FAILED: $target (full log above; crash inputs are in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
}

for target in $(cargo fuzz list); do
    echo "=== $target: fuzzing for ${seconds}s"
    mkdir -p "$scratch/$target" "corpus/$target"
    run "$target" "$scratch/$target.log" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::' "$scratch/$target.log"

    if [[ -d "regressions/$target" ]]; then
        shopt -s nullglob
        inputs=("regressions/$target"/*)
        shopt -u nullglob
        if ((${#inputs[@]} > 0)); then
            echo "=== $target: replaying ${#inputs[@]} regression input(s)"
            run "$target" "$scratch/$target-regressions.log" "${inputs[@]}"
            grep -E '^Executed ' "$scratch/$target-regressions.log"
        fi
    fi
done
echo "=== all targets passed"
