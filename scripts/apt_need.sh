# Shared by the install scripts (sourced): apt_need WHO HINT PKG...
# Installs the Debian packages PKG... with apt-get when we are root (retrying once after apt-get update);
# otherwise stops, telling the user what to install. WHO prefixes the messages; HINT says what needs them.
apt_need() {
    local who=$1 hint=$2
    shift 2
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "$who: apt-get install $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
            || { echo "$who: ERROR: apt-get could not install $*" >&2; exit 1; }
    else
        echo "$who: ERROR: $hint: run 'sudo apt-get install -y $*' (or your system's equivalent) and rerun" >&2
        exit 1
    fi
}
