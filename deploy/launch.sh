#!/usr/bin/env bash
# Launches a gunshot-spotter pipeline on Dataflow.
#
#   deploy/launch.sh PIPELINE [--mode template|container|setup_file] [--project P] [--region R]
#       [--bucket B] [--repository REPO] [--tag TAG] [--job_name NAME] [--machine_type TYPE]
#       [--num_workers N] [--max_workers N] [--dry_run] -- --flag=value ...
#
# PIPELINE: build_subset | score | transform. Everything after `--` goes to the pipeline (its own flags,
# see `python -m pipelines.score --help` etc.).
# Modes:
#   template    (default) `gcloud dataflow flex-template run` of gs://BUCKET/templates/PIPELINE.json
#               (deploy/build_templates.sh); nothing but gcloud needed. Flags become template
#               parameters: --flag=value or --flag value; a bare switch (--skip_existing) becomes
#               skip_existing=true.
#   container   runs `python -m MODULE --runner DataflowRunner` here with the workers in the custom
#               container IMAGE:TAG (deploy/build_image.sh); waits for the job, logs its counters and
#               finishes the outputs (score: moves the tables into place; transform: transform_info.json).
#   setup_file  the same with the stock Beam worker image and this checkout shipped as an sdist
#               (--setup_file); give model files as gs:// paths (--checkpoint/--pca), workers copy
#               them to local disk once each.
# --dry_run prints the command instead of running it. Machine type and worker count defaults per
# pipeline come from the measurements in docs/dataflow.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h | --help) usage; exit 0 ;; esac
PIPELINE="$1"
shift
check_pipeline "${PIPELINE}"

MODE=template
JOB_NAME=""
case "${PIPELINE}" in
  build_subset) MODULE=pipelines.build_subset MACHINE_TYPE=n1-standard-2 NUM_WORKERS=2 MAX_WORKERS=10 ;;
  score) MODULE=pipelines.score MACHINE_TYPE=n1-standard-4 NUM_WORKERS=5 MAX_WORKERS=20 ;;
  transform) MODULE=training.transform MACHINE_TYPE=n1-highmem-4 NUM_WORKERS=2 MAX_WORKERS=10 ;;
esac
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) MODE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --repository) REPOSITORY="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --job_name) JOB_NAME="$2"; shift 2 ;;
    --machine_type) MACHINE_TYPE="$2"; shift 2 ;;
    --num_workers) NUM_WORKERS="$2"; shift 2 ;;
    --max_workers) MAX_WORKERS="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown flag ${1@Q} before -- (pipeline flags go after --; see --help)" ;;
  esac
done
PIPELINE_ARGS=("$@")
resolve_settings
[[ "${NUM_WORKERS}" =~ ^[1-9][0-9]*$ && "${MAX_WORKERS}" =~ ^[1-9][0-9]*$ ]] \
  || die "--num_workers/--max_workers must be positive integers"
JOB_NAME="${JOB_NAME:-gunshot-${PIPELINE//_/-}-$(date -u +%Y%m%d-%H%M%S)}"
[[ "${JOB_NAME}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "--job_name ${JOB_NAME@Q} must match [a-z]([-a-z0-9]*[a-z0-9])?"

case "${MODE}" in
  template)
    # gcloud's ^~^ prefix makes ~ the separator, so values may contain commas.
    params=""
    for ((i = 0; i < ${#PIPELINE_ARGS[@]}; i++)); do
      arg="${PIPELINE_ARGS[i]}"
      [[ "${arg}" == --* ]] || die "expected --flag=value, got ${arg@Q}"
      arg="${arg#--}"
      if [[ "${arg}" != *=* ]]; then
        next="${PIPELINE_ARGS[i + 1]:-}"
        if [[ -n "${next}" && "${next}" != --* ]]; then
          arg="${arg}=${next}"
          i=$((i + 1))
        else
          arg="${arg}=true"  # a bare switch (--skip_existing): the pipelines take --flag=true
        fi
      fi
      [[ "${arg}" != *"~"* ]] || die "template parameter values cannot contain '~': ${arg@Q}"
      params+="~${arg}"
    done
    params+="~sdk_container_image=${IMAGE}:${TAG}"
    run gcloud dataflow flex-template run "${JOB_NAME}" \
      --template-file-gcs-location "gs://${BUCKET}/templates/${PIPELINE}.json" \
      --project "${PROJECT}" \
      --region "${REGION}" \
      --staging-location "gs://${BUCKET}/staging" \
      --temp-location "gs://${BUCKET}/tmp" \
      --worker-machine-type "${MACHINE_TYPE}" \
      --num-workers "${NUM_WORKERS}" \
      --max-workers "${MAX_WORKERS}" \
      --parameters "^~^${params#\~}"
    ;;
  container | setup_file)
    beam_args=(
      --runner=DataflowRunner
      "--project=${PROJECT}"
      "--region=${REGION}"
      "--job_name=${JOB_NAME}"
      "--temp_location=gs://${BUCKET}/tmp"
      "--staging_location=gs://${BUCKET}/staging"
      "--machine_type=${MACHINE_TYPE}"
      "--num_workers=${NUM_WORKERS}"
      "--max_num_workers=${MAX_WORKERS}"
    )
    if [[ "${MODE}" == container ]]; then
      beam_args+=("--sdk_container_image=${IMAGE}:${TAG}" --sdk_location=container)
    else
      beam_args+=("--setup_file=${REPO_DIR}/setup.py")
    fi
    cd "${REPO_DIR}"
    run "${PYTHON:-python3}" -m "${MODULE}" "${PIPELINE_ARGS[@]}" "${beam_args[@]}"
    ;;
  *) die "--mode must be template, container or setup_file, got ${MODE@Q}" ;;
esac
