# shellcheck shell=bash
# Sourced by the scripts: run one step as root, and only that step.
#
#   as_root CMD [ARG...]
#
# * already root: runs CMD as it is;
# * otherwise, with sudo: runs it through sudo, which resets the environment, so the variables
#   the step needs are handed over explicitly: PATH (with any additions the script made), CI,
#   every SMTPCONN_* variable (SMTPCONN_LAB_DIR, ...), and PYTHONDONTWRITEBYTECODE=1 so a Python
#   run as root leaves no root-owned __pycache__ in the user's checkout; sudo itself sets
#   SUDO_UID/SUDO_GID, by which the lab hands the files the user reads back to that user;
# * otherwise: says which step needs root and how to get it, and exits 1.
#
#   need_root_or_sudo WHAT   fail early (same message) when as_root could not work
as_root_message() {
    echo "${0##*/}: this step needs root${1:+ ($1)}: run as root, or install sudo" >&2
}

need_root_or_sudo() {
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
        as_root_message "$*"
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
        return
    fi
    if ! command -v sudo >/dev/null 2>&1; then
        as_root_message "${*:1:3}"
        exit 1
    fi
    local keep=("PATH=$PATH" "PYTHONDONTWRITEBYTECODE=1") name
    [ -n "${CI+x}" ] && keep+=("CI=$CI")
    while IFS= read -r name; do
        keep+=("$name=${!name}")
    done < <(compgen -e | grep '^SMTPCONN_' || true)
    sudo -- env "${keep[@]}" "$@"
}
