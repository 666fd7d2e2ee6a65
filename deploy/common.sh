# Shared settings and helpers of the deploy/*.sh scripts (sourced, not run).
#
# Settings come from flags or the environment:
#   GUNSHOT_PROJECT (else GOOGLE_CLOUD_PROJECT, else `gcloud config get-value project`), GUNSHOT_REGION
#   (us-central1), GUNSHOT_REPOSITORY (Artifact Registry repository, gunshot), GUNSHOT_BUCKET (bucket
#   name for templates, staging and temp files; default PROJECT-gunshot), GUNSHOT_TAG (image tag, the
#   package version from setup.py).

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "${DEPLOY_DIR}/.." && pwd)"
PIPELINES=(build_subset score transform)

PROJECT="${GUNSHOT_PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
REGION="${GUNSHOT_REGION:-us-central1}"
REPOSITORY="${GUNSHOT_REPOSITORY:-gunshot}"
BUCKET="${GUNSHOT_BUCKET:-}"
TAG="${GUNSHOT_TAG:-$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "${REPO_DIR}/setup.py")}"
DRY_RUN=0

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Prints the command (shell-quoted, one line) in --dry_run mode, else prints it to stderr and runs it.
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    printf '+ %q ' "$@" >&2
    echo >&2
    "$@"
  fi
}

# Fills in PROJECT and BUCKET defaults and derives IMAGE; call after flag parsing.
resolve_settings() {
  if [[ -z "${PROJECT}" ]]; then
    if [[ "${DRY_RUN}" == 1 ]]; then
      PROJECT="PROJECT"
    elif command -v gcloud > /dev/null; then
      PROJECT="$(gcloud config get-value project 2> /dev/null || true)"
    fi
  fi
  [[ -n "${PROJECT}" ]] || die "no project: pass --project or set GUNSHOT_PROJECT"
  [[ "${PROJECT}" =~ ^[a-z][-a-z0-9]{4,28}[a-z0-9]$ || "${PROJECT}" == PROJECT ]] \
    || die "--project ${PROJECT@Q} is not a valid Google Cloud project id"
  BUCKET="${BUCKET:-${PROJECT}-gunshot}"
  BUCKET="${BUCKET#gs://}"
  BUCKET="${BUCKET%/}"
  [[ -n "${TAG}" ]] || die "no image tag: pass --tag"
  IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/gunshot-spotter"
}

# The image tag of a pipeline's flex-template launch image (Dockerfile target launch-<name>).
launch_tag() {
  echo "${TAG}-launch-${1//_/-}"
}

check_pipeline() {
  local name="$1" known
  for known in "${PIPELINES[@]}"; do
    [[ "${name}" == "${known}" ]] && return 0
  done
  die "unknown pipeline ${name@Q}; one of: ${PIPELINES[*]}"
}
