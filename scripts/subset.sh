#!/usr/bin/env bash
# Make a data folder that holds a subset of another one's cases, as symbolic links, chosen from
# its cases.tsv (as written by `ichnet synth`): by anatomy, by case index range, or both.
# How the leave-one-anatomy-out split and the two-halves evaluations of the model card were made.
#
# Usage: scripts/subset.sh SRC DEST [--anatomy NAME] [--exclude-anatomy NAME] [--from I] [--to J]
#        [--half 1|2]
#   --from/--to  keep cases whose index (synth_NNNNN) lies in [I, J)
#   --half       keep the first or second half of the selected cases (to evaluate on two cores)
set -euo pipefail

src="$1"; dest="$2"; shift 2
anatomy=""; exclude=""; from=0; to=999999999; half=0
while [ $# -gt 0 ]; do
  case "$1" in
    --anatomy) anatomy="$2"; shift 2 ;;
    --exclude-anatomy) exclude="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    --to) to="$2"; shift 2 ;;
    --half) half="$2"; shift 2 ;;
    *) echo "subset.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$src/cases.tsv" ] || { echo "subset.sh: $src/cases.tsv not found (not an ichnet synth folder)" >&2; exit 2; }

src="$(cd "$src" && pwd)"
mapfile -t names < <(awk -F'\t' -v a="$anatomy" -v x="$exclude" -v lo="$from" -v hi="$to" '
  NR > 1 {
    i = substr($1, 7) + 0
    if ((a == "" || $2 == a) && (x == "" || $2 != x) && i >= lo && i < hi) print $1
  }' "$src/cases.tsv")
n=${#names[@]}
[ "$n" -gt 0 ] || { echo "subset.sh: no case of $src matches" >&2; exit 2; }
case "$half" in
  1) names=("${names[@]:0:$(((n + 1) / 2))}") ;;
  2) names=("${names[@]:$(((n + 1) / 2))}") ;;
esac

mkdir -p "$dest/images" "$dest/masks"
for name in "${names[@]}"; do
  ln -sf "$src/images/$name.nii.gz" "$dest/images/$name.nii.gz"
  ln -sf "$src/masks/$name.nii.gz" "$dest/masks/$name.nii.gz"
done
# The kept cases' rows, in one pass over cases.tsv.
printf '%s\n' "${names[@]}" |
  awk -F'\t' 'NR == FNR { keep[$1] = 1; next } FNR == 1 || ($1 in keep)' - "$src/cases.tsv" \
  > "$dest/cases.tsv"
echo "$dest: ${#names[@]} cases"
