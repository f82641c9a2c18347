#!/usr/bin/env bash
# Upscale every video in a folder with plain shell: one stvsr call per file.
#
#   examples/batch.sh IN_DIR OUT_DIR [stvsr upscale options...]
#   examples/batch.sh ~/films ~/films-4x --model classic --scale 4 --fps-x 2
#
# Files already done are skipped (stvsr never leaves a partial file at the output path, so an
# existing output is a finished one). A file that fails is reported and the loop goes on; the
# script exits 1 if any file failed.
set -u
in_dir=${1:?usage: batch.sh IN_DIR OUT_DIR [options...]}
out_dir=${2:?usage: batch.sh IN_DIR OUT_DIR [options...]}
shift 2
mkdir -p "$out_dir"
failed=0
for input in "$in_dir"/*.{mp4,mkv,mov,avi,webm,m4v}; do
    [ -f "$input" ] || continue
    output="$out_dir/$(basename "$input")"
    if [ -e "$output" ]; then
        echo "skip $input (done)"
        continue
    fi
    if stvsr upscale "$input" "$output" --quiet "$@"; then
        echo "done $input"
    else
        echo "FAILED $input" >&2
        failed=1
    fi
done
exit $failed
