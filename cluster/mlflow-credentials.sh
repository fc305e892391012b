#!/usr/bin/env bash
# Give this node's MLflow clients the tracking server's basic-auth credentials (MG_TUNE_SERVER_AUTH=1).
#
# Run on the head by start-mlflow.sh and on every worker by worker_setup_commands. Reads
# cluster/mg-tune.env (synced to every node by file_mounts, never committed) and writes
# ~/.mlflow/credentials, the file MLflow's client reads when MLFLOW_TRACKING_USERNAME /
# MLFLOW_TRACKING_PASSWORD are not set, readable by this user only:
#
#   [mlflow]
#   mlflow_tracking_username = admin          (MG_TUNE_MLFLOW_USERNAME, default admin)
#   mlflow_tracking_password = <MLFLOW_AUTH_ADMIN_PASSWORD, or MG_TUNE_MLFLOW_PASSWORD>
#
# So searches submitted as Ray jobs (their drivers) and their trials (Ray workers) log to
# the server without any credential in a job, a spec, a URI or what Ray pickles. Without
# MG_TUNE_SERVER_AUTH=1 it removes nothing and writes nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/read-env.sh"
[ "${MG_TUNE_SERVER_AUTH:-}" = "1" ] || exit 0
password="${MG_TUNE_MLFLOW_PASSWORD:-${MLFLOW_AUTH_ADMIN_PASSWORD:-}}"
if [ -z "$password" ]; then
  echo "error: $here/mg-tune.env: MG_TUNE_SERVER_AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD (or MG_TUNE_MLFLOW_PASSWORD) for the nodes' MLflow clients" >&2
  exit 2
fi
umask 077
mkdir -p "$HOME/.mlflow"
tmp="$(mktemp "$HOME/.mlflow/credentials.XXXXXX")"
printf '[mlflow]\nmlflow_tracking_username = %s\nmlflow_tracking_password = %s\n' "${MG_TUNE_MLFLOW_USERNAME:-admin}" "$password" > "$tmp"
mv "$tmp" "$HOME/.mlflow/credentials"
