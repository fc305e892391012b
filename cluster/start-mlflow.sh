#!/usr/bin/env bash
# Start the MLflow tracking server on the Ray head node and point every later shell at it.
#
# Run by `ray up` (head_start_ray_commands of cluster.yaml / local.yaml), or by hand on the head.
# Settings come from the environment or from cluster/mg-tune.env (copy mg-tune.env.example;
# it is git-ignored and synced to the nodes by file_mounts). No secret belongs in the yaml files.
#
#   MG_TUNE_BACKEND_STORE_URI  runs/metrics database. Default: a PostgreSQL database `mlflow`
#                              on the head, reached over its Unix socket as the current user.
#                              A managed database: postgresql://user@host:5432/mlflow
#                              (password in ~/.pgpass or PGPASSWORD, never in the URI).
#   MG_TUNE_ARTIFACTS          where checkpoints and plots go: s3://bucket/prefix (credentials
#                              from the instance role). Default: ~/mlartifacts on the head.
#   MG_TUNE_SERVER_HOST        address to bind. Default: the head's first private IP, so that
#                              worker nodes reach it; keep port 5000 closed to the internet.
#   MG_TUNE_SERVER_PORT        default 5000.
#   MG_TUNE_SERVER_AUTH=1      MLflow basic auth; set MLFLOW_AUTH_ADMIN_PASSWORD too.
#   MG_TUNE_STORAGE_PATH       Ray Tune's state of submitted searches whose spec names no
#                              storage_path (s3://bucket/ray). Default: ~/mg-tune-runs on the head.
#
# ~/.mg-tune-tracking (sourced by ~/.bashrc, so Ray and the searches it runs as jobs inherit it)
# gets MLFLOW_TRACKING_URI and MG_TUNE_STORAGE_PATH; with MG_TUNE_SERVER_AUTH=1 the MLflow
# client credentials go to ~/.mlflow/credentials (mlflow-credentials.sh, also run on workers).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/read-env.sh"

host="${MG_TUNE_SERVER_HOST:-$(hostname -I | awk '{print $1}')}"
port="${MG_TUNE_SERVER_PORT:-5000}"
backend="${MG_TUNE_BACKEND_STORE_URI:-postgresql://$(whoami)@/mlflow?host=/var/run/postgresql}"
artifacts="${MG_TUNE_ARTIFACTS:-$HOME/mlartifacts}"
uri="http://$host:$port"

# A restarted head (ray up again) replaces the old server.
pkill -f "mg-tune server .*--port $port" 2>/dev/null || true  # SIGTERM: it stops its MLflow, waits for it, exits
pkill -f "mlflow server .*--port $port" 2>/dev/null || true   # one started by hand
# The new server refuses a port still in use (issue 29): wait until the old ones are gone.
for _ in $(seq 1 90); do
  pgrep -f "(mg-tune|mlflow) server .*--port $port" > /dev/null || break
  sleep 0.5
done

nohup mg-tune server --host "$host" --port "$port" --workers 2 \
  --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --allowed-hosts "$host:$port,$host,localhost:$port" \
  ${MG_TUNE_SERVER_AUTH:+--auth} --log-file "$HOME/mlflow-server.log" \
  > "$HOME/mg-tune-server.out" 2>&1 &

for _ in $(seq 1 120); do
  if curl -fsS "$uri/health" > /dev/null 2>&1; then
    "$here/mlflow-credentials.sh"
    echo "export MLFLOW_TRACKING_URI=$uri" > "$HOME/.mg-tune-tracking"
    if [ -n "${MG_TUNE_STORAGE_PATH:-}" ]; then
      echo "export MG_TUNE_STORAGE_PATH=$MG_TUNE_STORAGE_PATH" >> "$HOME/.mg-tune-tracking"
    fi
    grep -q mg-tune-tracking "$HOME/.bashrc" 2>/dev/null || echo '[ -f ~/.mg-tune-tracking ] && source ~/.mg-tune-tracking' >> "$HOME/.bashrc"
    echo "MLflow tracking server ready: export MLFLOW_TRACKING_URI=$uri"
    exit 0
  fi
  sleep 1
done
echo "error: the MLflow tracking server did not come up on $uri; see ~/mg-tune-server.out and ~/mlflow-server.log" >&2
exit 1
