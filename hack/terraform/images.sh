#!/usr/bin/env bash
# make images: build images/trainer, images/tf-trainer and images/watcher and
# push them to the Artifact Registry repository that `make cluster` created,
# tagged with the git sha (short, 12 characters; "-dirty" when the work tree
# has uncommitted changes).
#
# BUILDER=cloudbuild (default: builds remotely, needs no Docker engine) or
# BUILDER=docker (docker build + push; needs a running Docker engine).
# IMAGES="trainer watcher" builds a subset. IMAGE_REPOSITORY overrides the
# repository (else: terraform output image_repository). PROJECT as for cluster.
set -euo pipefail
script_name=images
# shellcheck source=hack/terraform/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

builder="${BUILDER:-cloudbuild}"
case "$builder" in
  cloudbuild|docker) ;;
  *) die "BUILDER must be cloudbuild or docker, not '$builder'" ;;
esac

need git "install git"
need_gcloud
resolve_project
if [[ "$builder" == cloudbuild ]]; then
  check_apis cloudbuild.googleapis.com
else
  need docker "install Docker, or use BUILDER=cloudbuild"
  docker info >/dev/null 2>&1 || die "no Docker engine is running (docker info failed): start one, or use BUILDER=cloudbuild"
fi

repository="${IMAGE_REPOSITORY:-}"
if [[ -z "$repository" ]]; then
  need_terraform
  repository="$(tf_output image_repository)"
fi

sha="$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null)" || die "$repo is not a git checkout: cannot tag images with the git sha"
if [[ -n "$(git -C "$repo" status --porcelain -- images 2>/dev/null)" ]]; then
  sha="$sha-dirty"
fi

read -r -a images <<<"${IMAGES:-trainer tf-trainer watcher}"
for image in "${images[@]}"; do
  [[ -f "$repo/images/$image/Dockerfile" ]] || die "images/$image/Dockerfile not found"
done

if [[ "$builder" == docker ]]; then
  gcloud auth configure-docker "${repository%%/*}" --quiet >&2 || die "gcloud auth configure-docker ${repository%%/*} failed"
fi

for image in "${images[@]}"; do
  ref="$repository/$image:$sha"
  say "building $ref with $builder"
  if [[ "$builder" == cloudbuild ]]; then
    gcloud builds submit "$repo/images/$image" --project "$project" --tag "$ref" >&2 \
      || die "Cloud Build of $ref failed (see above)"
  else
    docker build -t "$ref" "$repo/images/$image" >&2 || die "docker build of $ref failed"
    docker push "$ref" >&2 || die "docker push of $ref failed"
  fi
  echo "$ref"
done

cat >&2 <<MSG

Pushed ${#images[@]} image(s) tagged $sha to $repository.
Next:
  helm upgrade retrain-watcher charts/retrain-watcher -n ${K8S_NAMESPACE:-training} --reuse-values --set image.tag=$sha
  (jobs: set image: $repository/trainer:$sha in your job spec)
MSG
