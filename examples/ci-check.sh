#!/usr/bin/env bash
# A CI job guarding a connector profile: validate it, then list what it holds, reading only the
# JSON on stdout and the documented exit codes (0 ok, 1 a check failed, 2 bad input, 3 could not
# run). Requires jq. Usage: examples/ci-check.sh path/to/smtpconn.toml
set -uo pipefail
profile=${1:-smtpconn.toml}
export SMTPCONN_PROFILE=$profile

smtpconn profile validate --json > validate.json
case $? in
    0) ;;
    2) echo "profile is invalid:"; jq -r '.findings[]' validate.json; exit 2 ;;
    *) echo "could not validate the profile"; exit 3 ;;
esac
jq -r '.warnings[]' validate.json

smtpconn list --json | jq -r '.addresses[] | "\(.address)\t\(.mode)\t\(.workflow)"'

# Once the servers are reachable from CI, verify them too; exit 1 means a check failed.
if [ "${SMTPCONN_CI_VERIFY:-0}" = 1 ]; then
    smtpconn verify --json --junit verify-junit.xml > verify.json
    status=$?
    jq -r '.addresses[] | .address as $a | .checks[] | select(.status != "pass")
           | "\($a)\t\(.id)\t\(.status)\t\(.summary)\n\tfix: \(.fix)"' verify.json
    exit $status
fi
