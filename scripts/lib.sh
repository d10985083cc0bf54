# Shared by scripts/demo and scripts/test: a venv with Science Gateway installed from a built
# wheel, and configurable-http-proxy (JupyterHub's proxy, an npm package) beside it.
# shellcheck shell=bash

sg_log() { printf '\033[1m[science-gateway]\033[0m %s\n' "$*" >&2; }
sg_die() { sg_log "error: $*"; exit 1; }

# sg_now: seconds since the epoch, with decimals (bash 5's EPOCHREALTIME).
sg_now() { printf '%s\n' "${EPOCHREALTIME/,/.}"; }

# sg_elapsed START: seconds since START (an sg_now value), one decimal.
sg_elapsed() { awk -v a="$1" -v b="$(sg_now)" 'BEGIN { printf "%.1f", b - a }'; }

# sg_timed LABEL COMMAND...: run COMMAND, then log "time: LABEL N s" (also when it fails); keeps
# its exit status. The run's log then says where the time went.
sg_timed() {
  local label=$1 start rc=0
  shift
  start=$(sg_now)
  "$@" || rc=$?
  sg_log "time: $label $(sg_elapsed "$start") s$([ "$rc" = 0 ] || echo " (failed, exit $rc)")"
  return "$rc"
}

# sg_python: a Python >= 3.11 with venv. Debian's /usr/bin/python3 first: it is world-readable,
# which batch jobs running as other users need.
sg_python() {
  local candidate
  for candidate in "${SG_PYTHON:-}" /usr/bin/python3 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  sg_die "need Python >= 3.11 with venv (Debian: apt-get install python3-venv)"
}

# sg_build_wheel DIST: build the project's wheel into DIST and print its path.
sg_build_wheel() {
  local dist=$1 py
  py=$(sg_python)
  rm -rf "$dist" && mkdir -p "$dist"
  "$py" -m pip wheel --quiet --no-deps --wheel-dir "$dist" . >&2 || sg_die "building the wheel failed"
  ls "$dist"/science_gateway-*.whl
}

# sg_venv VENV WHEEL EXTRAS: (re)install the wheel with EXTRAS into VENV.
sg_venv() {
  local venv=$1 wheel=$2 extras=$3
  if [ ! -x "$venv/bin/python" ]; then
    sg_log "creating $venv"
    "$(sg_python)" -m venv "$venv"
  fi
  sg_log "installing $(basename "$wheel") [$extras] into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel" \
    || sg_die "pip could not install $wheel"
  # Resolving the dependencies takes most of this step (~40 s) even when nothing changed: skip it
  # when the wheel's requirements and the extras are those of the last successful install.
  local deps stamp=$venv/.science-gateway-deps
  deps=$("$venv/bin/python" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(sys.argv[2]); print("".join(l for n in z.namelist() if n.endswith(".dist-info/METADATA") for l in z.read(n).decode().splitlines(True) if l.startswith(("Requires-Dist", "Requires-Python"))))' "$wheel" "$extras" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$deps" ]; then
    sg_log "dependencies unchanged since the last install into $venv (delete $stamp to reinstall them)"
    return 0
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$wheel[$extras]" \
    || sg_die "pip could not install the dependencies of $wheel[$extras]"
  echo "$deps" >"$stamp"
}

# sg_proxy VENV: configurable-http-proxy under VENV/share/science-gateway/proxy; prints its bin dir.
sg_proxy() {
  local prefix=$1/share/science-gateway/proxy
  if [ ! -x "$prefix/node_modules/.bin/configurable-http-proxy" ]; then
    command -v npm >/dev/null || sg_die "need Node.js and npm for JupyterHub's proxy (Debian: apt-get install nodejs npm)"
    sg_log "installing configurable-http-proxy with npm"
    npm install --silent --no-audit --no-fund --prefix "$prefix" configurable-http-proxy@4 >&2 \
      || sg_die "npm could not install configurable-http-proxy"
  fi
  echo "$prefix/node_modules/.bin"
}
