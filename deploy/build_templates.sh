#!/usr/bin/env bash
# Builds the flex templates gs://BUCKET/templates/{build_subset,score,transform}.json from the launch
# images (deploy/build_image.sh) and the metadata specs in deploy/templates/ (parameters + validation).
#
#   deploy/build_templates.sh --project my-project [--region us-central1] [--repository gunshot]
#                             [--bucket my-bucket] [--tag 0.1.0] [--dry_run]
#
# --dry_run prints the gcloud commands instead of running them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --repository) REPOSITORY="$2"; shift 2 ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown flag ${1@Q} (see --help)" ;;
  esac
done
resolve_settings

for name in "${PIPELINES[@]}"; do
  run gcloud dataflow flex-template build "gs://${BUCKET}/templates/${name}.json" \
    --image "${IMAGE}:$(launch_tag "${name}")" \
    --sdk-language PYTHON \
    --metadata-file "${DEPLOY_DIR}/templates/${name}.json" \
    --staging-location "gs://${BUCKET}/staging" \
    --temp-location "gs://${BUCKET}/tmp" \
    --project "${PROJECT}"
done
