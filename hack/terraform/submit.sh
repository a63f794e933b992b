#!/usr/bin/env bash
# make submit JOB=jobs/x.yaml: `jobgen submit JOB`, with the image filled in.
#
# The example specs in jobs/ name the placeholder registry
# us-docker.pkg.dev/my-project/ (or set no image). For such a spec the image
# becomes <registry>/<trainer|tf-trainer>:<tag> where
#   registry = TRAINER_IMAGE_REPOSITORY, else terraform output image_repository
#   tag      = IMAGE_TAG, else this checkout's git sha tag (what make images pushes)
# IMAGE=<ref> sets the image of any spec. A spec naming a real image keeps it.
# Without a registry (no make cluster yet, e.g. the local cluster) the spec is
# submitted unchanged. SUBMIT_ARGS go to jobgen submit (e.g. --dry-run=server).
set -euo pipefail
script_name=submit
# shellcheck source=hack/terraform/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

placeholder="us-docker.pkg.dev/my-project/"
job="${1:-}"
if [[ -z "$job" ]]; then
  echo "usage: make submit JOB=jobs/x.yaml [IMAGE=registry/image:tag]" >&2
  exit 2
fi
[[ -f "$job" ]] || { echo "submit: $job: no such file" >&2; exit 2; }
jobgen="${JOBGEN:-jobgen}"
py="${JOBGEN_PYTHON:-$(dirname "$jobgen")/python}"
[[ -x "$py" ]] || py=python3

# kind and image of the spec ("-" when unset); a spec that does not parse is
# left to jobgen, which names the file and field.
read -r kind image < <("$py" -c 'import sys, yaml
try:
    d = yaml.safe_load(open(sys.argv[1])) or {}
except Exception:
    d = {}
d = d if isinstance(d, dict) else {}
print(d.get("kind") or "PyTorchJob", d.get("image") or "-")' "$job" 2>/dev/null || echo "PyTorchJob -")

sets=()
if [[ -n "${IMAGE:-}" ]]; then
  sets=(--set-string "image=$IMAGE")
elif [[ "$image" == - || "$image" == "$placeholder"* ]]; then
  registry="${TRAINER_IMAGE_REPOSITORY:-}"
  if [[ -z "$registry" ]] && command -v terraform >/dev/null 2>&1; then
    registry="$(tf output -raw image_repository 2>/dev/null || true)"
  fi
  if [[ -n "$registry" ]]; then
    name=trainer
    [[ "$kind" == TFJob ]] && name=tf-trainer
    ref="$registry/$name:${IMAGE_TAG:-$(git_tag)}"
    say "image: $ref (the spec names ${image/#-/no image}; IMAGE=... to choose another)"
    sets=(--set-string "image=$ref")
  elif [[ "$image" == - ]]; then
    die "$job sets no image and no registry is known: run make cluster and make images, or pass IMAGE=registry/image:tag"
  fi
fi

read -r -a extra <<<"${SUBMIT_ARGS:-}"
exec "$jobgen" submit "$job" "${sets[@]}" "${extra[@]}"
