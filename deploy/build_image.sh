#!/usr/bin/env bash
# Builds and pushes the worker image and the flex-template launch images of deploy/Dockerfile to
# Artifact Registry: IMAGE:TAG (workers) and IMAGE:TAG-launch-{build-subset,score,transform}, with
# IMAGE = REGION-docker.pkg.dev/PROJECT/REPOSITORY/gunshot-spotter. The launch images share every layer
# with the worker image and differ only in FLEX_TEMPLATE_PYTHON_PY_FILE.
#
#   deploy/build_image.sh --project my-project [--region us-central1] [--repository gunshot] [--tag 0.1.0]
#                         [--no_models] [--models_base_url URL] [--dry_run]
#
# --dry_run prints the commands instead of running them. Needs docker and gcloud (see docs/dataflow.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BAKE_MODELS=1
MODELS_BASE_URL="https://storage.googleapis.com/audioset"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --repository) REPOSITORY="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --no_models) BAKE_MODELS=0; shift ;;
    --models_base_url) MODELS_BASE_URL="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag ${1@Q} (see --help)" ;;
  esac
done
resolve_settings

cd "${REPO_DIR}"
run gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
targets=(worker)
for name in "${PIPELINES[@]}"; do
  targets+=("launch-${name//_/-}")
done
for target in "${targets[@]}"; do
  if [[ "${target}" == worker ]]; then tag="${TAG}"; else tag="${TAG}-${target}"; fi
  run docker build --file deploy/Dockerfile --target "${target}" \
    --build-arg "BAKE_MODELS=${BAKE_MODELS}" --build-arg "MODELS_BASE_URL=${MODELS_BASE_URL}" \
    --tag "${IMAGE}:${tag}" .
  run docker push "${IMAGE}:${tag}"
done
