# bash completion for ohpub. Generated from the ohpub CLI by scripts/gen_completions.py; do not edit.
# Install: source it from ~/.bashrc, or copy it to ~/.local/share/bash-completion/completions/ohpub

_ohpub() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    # --option=value: bash splits the word at '='
    if [[ $cur == "=" ]]; then
        cur=""
    elif [[ $prev == "=" && $COMP_CWORD -ge 2 ]]; then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    fi
    local cmd="" npos=0 skip=0 i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((skip)); then
            skip=0; [[ $w == "=" ]] && skip=1
            continue
        fi
        if [[ -z $cmd ]]; then
            case $w in
                --base-url|--log-file|--timeout|--api-concurrency|--retries|--retry-budget) skip=1 ;;
                -*) ;;
                *) cmd=$w ;;
            esac
        else
            case "$cmd:$w" in
                list:--project|list:-p|list:--user|list:-u|list:--datatype|list:-t|list:--tag|list:--name|list:--since|list:--until|list:--format|list:-f|list:--limit|list:--base-url|list:--log-file|list:--timeout|list:--api-concurrency|list:--retries|list:--retry-budget) skip=1 ;;
                mirror:--project|mirror:-p|mirror:--user|mirror:-u|mirror:--datatype|mirror:-t|mirror:--tag|mirror:--name|mirror:--since|mirror:--until|mirror:--jobs|mirror:-j|mirror:--max-size|mirror:--format|mirror:-f|mirror:--multi-thread-cutoff|mirror:--work-dir|mirror:--base-url|mirror:--log-file|mirror:--timeout|mirror:--api-concurrency|mirror:--retries|mirror:--retry-budget) skip=1 ;;
                fetch:--dir|fetch:-d|fetch:--output|fetch:-o|fetch:--multi-thread-cutoff|fetch:--base-url|fetch:--log-file|fetch:--timeout|fetch:--api-concurrency|fetch:--retries|fetch:--retry-budget) skip=1 ;;
                verify:--format|verify:-f|verify:--base-url|verify:--log-file|verify:--timeout|verify:--api-concurrency|verify:--retries|verify:--retry-budget) skip=1 ;;
                status:--max-age|status:--format|status:-f|status:--base-url|status:--log-file|status:--timeout|status:--api-concurrency|status:--retries|status:--retry-budget) skip=1 ;;
                help:--base-url|help:--log-file|help:--timeout|help:--api-concurrency|help:--retries|help:--retry-budget) skip=1 ;;
                completion:--base-url|completion:--log-file|completion:--timeout|completion:--api-concurrency|completion:--retries|completion:--retry-budget) skip=1 ;;
                *:-*) ;;
                *) ((npos++)) ;;
            esac
        fi
    done
    case "$cmd:$prev" in
        :--base-url) COMPREPLY=(); return ;;
        :--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        :--timeout) COMPREPLY=(); return ;;
        :--api-concurrency) COMPREPLY=(); return ;;
        :--retries) COMPREPLY=(); return ;;
        :--retry-budget) COMPREPLY=(); return ;;
        list:--project|list:-p) COMPREPLY=(); return ;;
        list:--user|list:-u) COMPREPLY=(); return ;;
        list:--datatype|list:-t) COMPREPLY=(); return ;;
        list:--tag) COMPREPLY=(); return ;;
        list:--name) COMPREPLY=(); return ;;
        list:--since) COMPREPLY=(); return ;;
        list:--until) COMPREPLY=(); return ;;
        list:--format|list:-f) COMPREPLY=($(compgen -W "table json jsonl csv" -- "$cur")); return ;;
        list:--limit) COMPREPLY=(); return ;;
        list:--base-url) COMPREPLY=(); return ;;
        list:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        list:--timeout) COMPREPLY=(); return ;;
        list:--api-concurrency) COMPREPLY=(); return ;;
        list:--retries) COMPREPLY=(); return ;;
        list:--retry-budget) COMPREPLY=(); return ;;
        mirror:--project|mirror:-p) COMPREPLY=(); return ;;
        mirror:--user|mirror:-u) COMPREPLY=(); return ;;
        mirror:--datatype|mirror:-t) COMPREPLY=(); return ;;
        mirror:--tag) COMPREPLY=(); return ;;
        mirror:--name) COMPREPLY=(); return ;;
        mirror:--since) COMPREPLY=(); return ;;
        mirror:--until) COMPREPLY=(); return ;;
        mirror:--jobs|mirror:-j) COMPREPLY=(); return ;;
        mirror:--max-size) COMPREPLY=(); return ;;
        mirror:--format|mirror:-f) COMPREPLY=($(compgen -W "text jsonl" -- "$cur")); return ;;
        mirror:--multi-thread-cutoff) COMPREPLY=(); return ;;
        mirror:--work-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        mirror:--base-url) COMPREPLY=(); return ;;
        mirror:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        mirror:--timeout) COMPREPLY=(); return ;;
        mirror:--api-concurrency) COMPREPLY=(); return ;;
        mirror:--retries) COMPREPLY=(); return ;;
        mirror:--retry-budget) COMPREPLY=(); return ;;
        fetch:--dir|fetch:-d) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
        fetch:--output|fetch:-o) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        fetch:--multi-thread-cutoff) COMPREPLY=(); return ;;
        fetch:--base-url) COMPREPLY=(); return ;;
        fetch:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        fetch:--timeout) COMPREPLY=(); return ;;
        fetch:--api-concurrency) COMPREPLY=(); return ;;
        fetch:--retries) COMPREPLY=(); return ;;
        fetch:--retry-budget) COMPREPLY=(); return ;;
        verify:--format|verify:-f) COMPREPLY=($(compgen -W "text jsonl" -- "$cur")); return ;;
        verify:--base-url) COMPREPLY=(); return ;;
        verify:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        verify:--timeout) COMPREPLY=(); return ;;
        verify:--api-concurrency) COMPREPLY=(); return ;;
        verify:--retries) COMPREPLY=(); return ;;
        verify:--retry-budget) COMPREPLY=(); return ;;
        status:--max-age) COMPREPLY=(); return ;;
        status:--format|status:-f) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        status:--base-url) COMPREPLY=(); return ;;
        status:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        status:--timeout) COMPREPLY=(); return ;;
        status:--api-concurrency) COMPREPLY=(); return ;;
        status:--retries) COMPREPLY=(); return ;;
        status:--retry-budget) COMPREPLY=(); return ;;
        help:--base-url) COMPREPLY=(); return ;;
        help:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        help:--timeout) COMPREPLY=(); return ;;
        help:--api-concurrency) COMPREPLY=(); return ;;
        help:--retries) COMPREPLY=(); return ;;
        help:--retry-budget) COMPREPLY=(); return ;;
        completion:--base-url) COMPREPLY=(); return ;;
        completion:--log-file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
        completion:--timeout) COMPREPLY=(); return ;;
        completion:--api-concurrency) COMPREPLY=(); return ;;
        completion:--retries) COMPREPLY=(); return ;;
        completion:--retry-budget) COMPREPLY=(); return ;;
    esac
    if [[ $cur == -* ]]; then
        local opts
        case $cmd in
            "") opts="--base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V --help -h" ;;
            list) opts="--project -p --user -u --datatype -t --tag --name --since --until --format -f --limit --help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            mirror) opts="--project -p --user -u --datatype -t --tag --name --since --until --jobs -j --dry-run -n --delete --no-delete --max-size --strict --no-strict --checksum --no-checksum --format -f --multi-thread-cutoff --work-dir --help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            fetch) opts="--dir -d --output -o --force --no-force --multi-thread-cutoff --help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            verify) opts="--format -f --help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            status) opts="--max-age --format -f --help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            help) opts="--help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
            completion) opts="--help -h --base-url --verbose -v --quiet -q --log-file --timeout --api-concurrency --retries --retry-budget --version -V" ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$cmd:$npos" in
        ":"*) COMPREPLY=($(compgen -W "list mirror fetch verify status help completion" -- "$cur")) ;;
        list:0) COMPREPLY=($(compgen -W "files projects datatypes members" -- "$cur")) ;;
        mirror:0) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
        verify:0) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
        status:0) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
        help:0) COMPREPLY=($(compgen -W "list mirror fetch verify status help completion" -- "$cur")) ;;
        completion:0) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
    esac
}

complete -F _ohpub ohpub
