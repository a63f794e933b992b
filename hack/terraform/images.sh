#!/usr/bin/env bash
# make images: build images/trainer, images/tf-trainer and images/watcher and
# push them to the Artifact Registry repository that `make cluster` created,
# tagged with the git sha (short, 12 characters; "-dirty" when tracked files
# have uncommitted changes), with build args IMAGE_REF and GIT_SHA.
#
# BUILDER=cloudbuild (default: builds remotely, needs no Docker engine) or
# BUILDER=docker (docker build + push; needs a running Docker engine).
# IMAGES="trainer watcher" builds a subset. IMAGE_REPOSITORY overrides the
# repository (else: terraform output image_repository). PROJECT as for cluster.
#
# Cloud Build runs as the build service account terraform created
# (BUILD_SERVICE_ACCOUNT, else terraform output build_service_account), with
# the source staged in BUILD_BUCKET (else terraform output build_bucket) and
# logs in Cloud Logging only: new projects give the default build service
# account no roles. Every upload skips what .gcloudignore lists (terraform
# state and variables, virtualenvs, .git).
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
build_sa="${BUILD_SERVICE_ACCOUNT:-}"
build_bucket="${BUILD_BUCKET:-}"
if [[ "$builder" == cloudbuild ]]; then
  if [[ -z "$build_sa" ]]; then
    need_terraform
    build_sa="$(tf output -raw build_service_account 2>/dev/null || true)"
  fi
  if [[ -z "$build_bucket" ]]; then
    need_terraform
    build_bucket="$(tf output -raw build_bucket 2>/dev/null || true)"
  fi
  [[ -n "$build_sa" && "$build_sa" != null && -n "$build_bucket" && "$build_bucket" != null ]] \
    || die "no build service account or staging bucket: apply terraform with enable_cloud_build = true (make cluster), or set BUILD_SERVICE_ACCOUNT and BUILD_BUCKET"
  [[ -f "$repo/.gcloudignore" ]] || die "$repo/.gcloudignore not found: it keeps terraform state and tfvars out of Cloud Build uploads"
fi

sha="$(git_tag)"
full_sha="$(git -C "$repo" rev-parse HEAD)"

# Build context and Dockerfile of each image, relative to the repo (as the
# Dockerfiles' headers say: tf-trainer builds from images/, the watcher from
# the repository root).
image_spec() {
  case "$1" in
    tf-trainer) echo "images images/tf-trainer/Dockerfile" ;;
    watcher) echo ". images/watcher/Dockerfile" ;;
    *) echo "images/$1 images/$1/Dockerfile" ;;
  esac
}

read -r -a images <<<"${IMAGES:-trainer tf-trainer watcher}"
for image in "${images[@]}"; do
  read -r context dockerfile < <(image_spec "$image")
  [[ -f "$repo/$dockerfile" ]] || die "$dockerfile not found"
done

if [[ "$builder" == docker ]]; then
  gcloud auth configure-docker "${repository%%/*}" --quiet >&2 || die "gcloud auth configure-docker ${repository%%/*} failed"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for image in "${images[@]}"; do
  read -r context dockerfile < <(image_spec "$image")
  ref="$repository/$image:$sha"
  ctx="$repo/$context"
  ctx="${ctx%/.}"
  say "building $ref from $context with $builder"
  if [[ "$builder" == cloudbuild ]]; then
    # --tag cannot name a Dockerfile outside the context root: use a build config.
    cfg="$work/cloudbuild-$image.yaml"
    rel="$(realpath -m --relative-to="$ctx" "$repo/$dockerfile")"
    cat >"$cfg" <<CFG
steps:
  - name: gcr.io/cloud-builders/docker
    env: ["DOCKER_BUILDKIT=1"]
    args: ["build", "-f", "$rel", "-t", "$ref", "--build-arg", "IMAGE_REF=$ref", "--build-arg", "GIT_SHA=$full_sha", "."]
images: ["$ref"]
options:
  logging: CLOUD_LOGGING_ONLY
CFG
    gcloud builds submit "$ctx" --project "$project" --config "$cfg" \
      --service-account "projects/$project/serviceAccounts/$build_sa" \
      --gcs-source-staging-dir "gs://$build_bucket/source" \
      --ignore-file "$repo/.gcloudignore" >&2 \
      || die "Cloud Build of $ref failed (see above)"
  else
    DOCKER_BUILDKIT=1 docker build -f "$repo/$dockerfile" -t "$ref" \
      --build-arg "IMAGE_REF=$ref" --build-arg "GIT_SHA=$full_sha" "$ctx" >&2 \
      || die "docker build of $ref failed"
    docker push "$ref" >&2 || die "docker push of $ref failed"
  fi
  echo "$ref"
done

cat >&2 <<MSG

Pushed ${#images[@]} image(s) tagged $sha to $repository.
Next:
  helm upgrade retrain-watcher charts/retrain-watcher -n ${K8S_NAMESPACE:-training} --reuse-values \
    --set-string image.tag=$sha --set-string jobs.train.image=$repository/trainer:$sha
  make submit JOB=jobs/cpu-ddp.yaml     # uses $repository/trainer:$sha (hack/terraform/submit.sh)
MSG
