# Sourced by the cluster scripts: load cluster/mg-tune.env (if present) into the environment.
#
# One line and exit 2 for a file that is not UTF-8 KEY=value text (binary, truncated
# mid-quote), before the calling script does anything. Needs $here (the cluster folder).
env_file="$here/mg-tune.env"
if [ -f "$env_file" ]; then
  # One line and exit 2 for a file that is not UTF-8 KEY=value text (binary, truncated mid-quote), before anything starts.
  python3 - "$env_file" <<'CHECK' || exit 2
import re, shlex, sys
path = sys.argv[1]
try:
    text = open(path, encoding="utf-8").read()
except UnicodeDecodeError as exc:
    sys.exit(f"error: {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})")
for n, line in enumerate(text.splitlines(), 1):
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    if "\0" in line or not re.fullmatch(r"(export\s+)?[A-Za-z_]\w*=.*", line.strip()):
        sys.exit(f"error: {path}: line {n}: expected KEY=value")
    try:
        shlex.split(line, comments=True)
    except ValueError as exc:  # an unterminated quote: the file was cut short
        sys.exit(f"error: {path}: line {n}: {exc} (truncated?)")
CHECK
  set -a; source "$env_file"; set +a
fi

