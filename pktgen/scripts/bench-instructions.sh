#!/usr/bin/env bash
# Instructions per packet of the in-memory pipeline, counted by callgrind.
#
# Each scenario runs `xvs-pktgen memory` twice under `valgrind --tool=callgrind`, with SHORT
# and LONG packets after identical setup (same flows, same table size); the difference of the
# two instruction totals divided by the difference of the packet counts is the cost of one
# packet, setup and exit cancelled exactly. Unlike time, the figure does not depend on what
# else the machine is doing. "generator" is the cost of writing the frames alone (included in
# every other figure); "pipeline" lines subtract it.
#
# Usage: bench-instructions.sh path/to/xvs-pktgen [flows]
set -euo pipefail
BIN=${1:?usage: $0 path/to/xvs-pktgen [flows]}
FLOWS=${2:-10000}
SHORT=100000
LONG=600000
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Total instructions of one run: callgrind's "summary:" line.
count() {
    valgrind --tool=callgrind --callgrind-out-file="$WORK/out" "$BIN" memory "$@" >/dev/null 2>"$WORK/log" \
        || { cat "$WORK/log" >&2; exit 1; }
    awk '/^summary:/ {print $2}' "$WORK/out"
}

per_packet() {
    local short long
    short=$(count --packets "$SHORT" --flows "$FLOWS" "$@")
    long=$(count --packets "$LONG" --flows "$FLOWS" "$@")
    echo $(( (long - short) / (LONG - SHORT) ))
}

echo "# callgrind, $FLOWS flows, 64-byte frames, ($LONG - $SHORT) packets; $(valgrind --version)"
generator=$(per_packet --mode established --method dr --generate-only)
echo "generator instructions_per_packet $generator"
for mode in established new; do
    for method in dr nat tun; do
        total=$(per_packet --mode "$mode" --method "$method")
        echo "${mode}_${method} instructions_per_packet $total"
        echo "${mode}_${method}_pipeline_only instructions_per_packet $(( total - generator ))"
    done
done
# IPv6 (`--ipv6`): the smallest IPv6 TCP frame is 78 bytes on the wire, so the generator's own
# cost is counted again for it.
generator6=$(per_packet --mode established --method dr --generate-only --ipv6)
echo "generator_ipv6 instructions_per_packet $generator6"
for mode in established new; do
    for method in dr nat tun; do
        total=$(per_packet --mode "$mode" --method "$method" --ipv6)
        echo "${mode}_${method}_ipv6 instructions_per_packet $total"
        echo "${mode}_${method}_ipv6_pipeline_only instructions_per_packet $(( total - generator6 ))"
    done
done
