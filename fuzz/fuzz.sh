#!/usr/bin/env bash
# Ward's fuzz targets on the stable toolchain, without cargo-fuzz: builds
# them with the coverage instrumentation cargo-fuzz uses (stable codegen
# flags) and runs them with the right seeds, dictionary and input size.
# See docs/FUZZING.md.
#
#   fuzz/fuzz.sh build [--symbolize]     instrumented build (fuzz/target/libfuzzer)
#   fuzz/fuzz.sh run TARGET [ARG...]     fuzz TARGET: corpus fuzz/corpus/TARGET (grows),
#                                        seeds fuzz/seeds/TARGET, then libFuzzer's ARGs
#   fuzz/fuzz.sh ci [SECONDS]            what CI runs: the seed tests, then each target
#                                        for SECONDS (default 20) from its seeds in a
#                                        throw-away corpus; fails on any crash
#   fuzz/fuzz.sh funcs TARGET [DIR...]   the functions of Ward's crates the inputs in DIRs
#                                        (default: the seeds) reach, from libFuzzer's
#                                        -print_coverage=1 (a --symbolize build)
#   fuzz/fuzz.sh targets                 the targets' names
#
# Environment: WARD_FUZZ_ASAN=1 builds and runs with AddressSanitizer
# (a -Z flag: the stable toolchain takes it only with RUSTC_BOOTSTRAP=1,
# which this sets; its own target directory; not with funcs);
# WARD_FUZZ_TARGET_DIR (default fuzz/target/libfuzzer, -asan with ASan);
# CARGO_BUILD_JOBS as for cargo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
targets=(policy_parser virtio_block_request virtio_mmio_registers ipc_router)
asan=${WARD_FUZZ_ASAN:-0}
suffix=
if [ "$asan" = 1 ]; then suffix=-asan; fi
target_dir=${WARD_FUZZ_TARGET_DIR:-$here/target/libfuzzer$suffix}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release

# What `cargo fuzz build --sanitizer none` passes (its default release
# build with debug assertions), plus limited debug information (function
# and line names, for panics and `funcs`).
sancov="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
sancov+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
sancov+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ "$asan" = 1 ]; then
    sancov+=" -Zsanitizer=address"
    export RUSTC_BOOTSTRAP=1
fi

die() { echo "fuzz.sh: $*" >&2; exit 1; }

# libFuzzer options of each target: its dictionary and largest input.
options() {
    case "$1" in
        policy_parser) echo "-dict=$here/policy.dict -max_len=4096" ;;
        virtio_block_request) echo "-max_len=16384" ;;
        virtio_mmio_registers) echo "-max_len=16384" ;;
        ipc_router) echo "-dict=$here/ipc_router.dict -max_len=8192" ;;
        *) die "no target $1 (targets: ${targets[*]})" ;;
    esac
}

build() {
    local features=()
    if [ "${1:-}" = --symbolize ]; then
        [ "$asan" = 1 ] && die "funcs: AddressSanitizer symbolizes by itself; run without WARD_FUZZ_ASAN"
        features=(--features symbolize)
    fi
    RUSTFLAGS="$sancov" CARGO_PROFILE_RELEASE_DEBUG=limited \
        cargo build --manifest-path "$here/Cargo.toml" --release --target "$triple" \
        --target-dir "$target_dir" --bins "${features[@]}"
}

# The last "cov: N ft: N corp: N/N" libFuzzer printed in log $1.
coverage() {
    grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "$1" | tail -n 1
}

stat() {
    sed -n "s/^stat::$2: *//p" "$1" | tail -n 1
}

ci() {
    local seconds=${1:-20} failed=0 work
    echo "fuzz.sh: the seed tests"
    cargo test --manifest-path "$here/Cargo.toml"
    echo "fuzz.sh: the instrumented build"
    build
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    for target in "${targets[@]}"; do
        mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
        local log=$work/$target/log status=0 started=$SECONDS
        # shellcheck disable=SC2046 # options are words
        "$bin_dir/$target" "$work/$target/corpus" "$here/seeds/$target" $(options "$target") \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$work/$target/artifacts/" >"$log" 2>&1 || status=$?
        local took=$((SECONDS - started))
        if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/$target/artifacts")" ]; then
            failed=1
            echo "fuzz.sh: $target FAILED (exit $status); the end of its log:"
            tail -n 80 "$log"
            for artifact in "$work/$target/artifacts"/*; do
                [ -e "$artifact" ] || continue
                echo "fuzz.sh: $target: $(basename "$artifact"), $(wc -c <"$artifact") bytes, base64:"
                base64 -w 100 "$artifact"
            done
            continue
        fi
        echo "fuzz.sh: $target: $(stat "$log" number_of_executed_units) inputs in ${took} s" \
            "($(stat "$log" average_exec_per_sec)/s), $(coverage "$log"), no failure"
    done
    [ "$failed" -eq 0 ] || die "a fuzz target failed"
}

funcs() {
    local target=$1 work log
    shift
    [ $# -gt 0 ] || set -- "$here/seeds/$target"
    options "$target" >/dev/null
    build --symbolize >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    log=$work/log
    # shellcheck disable=SC2046 # options are words
    "$bin_dir/$target" "$work" "$@" $(options "$target") -runs=0 -print_coverage=1 >"$log" 2>&1 ||
        { tail -n 40 "$log"; die "$target did not run"; }
    echo "$target over $*: $(coverage "$log")"
    # One line per function: COVERED or UNCOVERED, edges reached/all,
    # name. Ward's own functions only, drops and generic copies folded.
    sed -n -e 's/^COVERED_FUNC: hits: [0-9]* edges: \([0-9]*\)\/\([0-9]*\) \(.*\) [^ ]*$/C \1 \2 \3/p' \
        -e 's/^UNCOVERED_FUNC: hits: [0-9]* edges: \([0-9]*\)\/\([0-9]*\) \(.*\) [^ ]*$/U \1 \2 \3/p' "$log" |
        awk '$4 ~ /^<?ward_(vmm|ipc|policy|abi)::/ {
                name = $4; for (i = 5; i <= NF; i++) name = name " " $i
                crate = name; sub(/^</, "", crate); sub(/::.*/, "", crate)
                if (!(name in all)) { all[name] = 1; total[crate]++; order[++n] = name }
                if ($3 > edges[name]) edges[name] = $3
                if ($1 == "C") {
                    if (!(name in hit)) reached[crate]++
                    if ($2 > hit[name]) hit[name] = $2
                }
             }
             END {
                for (c in total) printf "  %s: %d of %d functions reached\n", c, reached[c], total[c]
                for (i = 1; i <= n; i++) if (order[i] in hit) printf "    %s (%d/%d edges)\n", order[i], hit[order[i]], edges[order[i]]
             }'
}

case "${1:-}" in
    build) shift; build "$@" ;;
    run)
        [ $# -ge 2 ] || die "usage: fuzz.sh run TARGET [libFuzzer ARG...]"
        target=$2; shift 2
        opts=$(options "$target")
        build
        mkdir -p "$here/corpus/$target" "$here/artifacts/$target"
        # shellcheck disable=SC2086 # options are words
        exec "$bin_dir/$target" "$here/corpus/$target" "$here/seeds/$target" $opts \
            -artifact_prefix="$here/artifacts/$target/" "$@"
        ;;
    ci) shift; ci "$@" ;;
    funcs)
        [ $# -ge 2 ] || die "usage: fuzz.sh funcs TARGET [DIR...]"
        shift; funcs "$@"
        ;;
    targets) printf '%s\n' "${targets[@]}" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
