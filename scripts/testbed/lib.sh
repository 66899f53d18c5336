# Shared by the testbed's scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

# The processes, one per line, whose environment holds ENTRY (NAME=VALUE): what a
# service started. This shell and its callers are left out (a test may call a script from
# inside a service, with ENTRY in its own environment).
processes_with_env() {
    local entry=$1 f p
    local -A mine=([$BASHPID]=1)
    p=$$
    while [ -n "$p" ] && [ "$p" -gt 1 ]; do
        mine[$p]=1
        p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')
    done
    for f in $(grep -lzxF "$entry" /proc/[0-9]*/environ 2>/dev/null); do
        p=${f#/proc/}
        p=${p%/environ}
        [ -n "${mine[$p]:-}" ] || echo "$p"
    done
}
