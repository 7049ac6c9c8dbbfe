#!/usr/bin/env bash
# The bare pipeline a user would script: export both revisions, render every app, diff.
#
# Usage: bench/baseline.sh REPO BASE HEAD APPS WORKDIR
#   APPS: one app a line, "name path renderer" (renderer: kustomize or plain)
# Serial on purpose: it is what a CI job running a shell loop does.
set -euo pipefail
repo=$1 base=$2 head=$3 apps=$4 work=$5
kubectl=${KUBECTL:-kubectl}

render_side() {
    local side=$1 rev=$2
    mkdir -p "$work/$side/tree" "$work/$side/out"
    git -C "$repo" archive "$rev" | tar -x -C "$work/$side/tree"
    while read -r name path renderer; do
        if [ "$renderer" = kustomize ]; then
            "$kubectl" kustomize "$work/$side/tree/$path" >"$work/$side/out/$name.yaml" 2>>"$work/stderr.log"
        else
            cat "$work/$side/tree/$path"/*.yaml >"$work/$side/out/$name.yaml"
        fi
    done <"$apps"
}

render_side base "$base"
render_side head "$head"
status=0
diff -ru "$work/base/out" "$work/head/out" >"$work/diff.txt" || status=$?
[ "$status" -le 1 ]
