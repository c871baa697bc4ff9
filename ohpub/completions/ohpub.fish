# fish completion for ohpub. Generated from the ohpub CLI by scripts/gen_completions.py; do not edit.
# Install: copy it to ~/.config/fish/completions/ohpub.fish

complete -c ohpub -f

# global options (before the command)
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l base-url -x -d 'Open Humans server to talk to'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l verbose -s v -d 'Also log every HTTP request and every file\'s result (keys redacted)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l quiet -s q -d 'Print errors only: no bars, warnings, retries or summary (the log file gets all)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l log-file -r -F -d 'Append a plain-text log to PATH (timestamps; no colour, no bars)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l timeout -x -d 'Longest wait for any one answer: to connect (at most 10 s) and for each read of a response'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l api-concurrency -x -d 'Requests in flight to Open Humans itself (listing, keys)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l retries -x -d 'Attempts per request without progress before giving up'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l retry-budget -x -d 'Longest time one request may spend failing and waiting to retry since it last made progress (default 120; 90, 90s, 2m)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l version -s V -d 'Print the version and exit'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -l help -s h -d 'Show the help and exit'

# commands
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a list -d 'List public data files (default), projects, datatypes or members'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a mirror -d 'Mirror public files into DEST/<username>/<project id>/<name>, resumably'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a fetch -d 'Download single files by id (resumable and verified, like mirror)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a verify -d 'Re-hash every tracked file against the state; list untracked files too'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a status -d 'What a mirror holds and how its last runs ended (for monitoring)'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a help -d 'Show the help of ohpub, or of one command'
complete -c ohpub -n 'not __fish_seen_subcommand_from list mirror fetch verify status help completion' -a completion -d 'Print the completion script for SHELL (static: no Python runs at Tab)'

# ohpub list
complete -c ohpub -n '__fish_seen_subcommand_from list' -l project -s p -x -d 'Only files of project ID (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l user -s u -x -d 'Only files of member USERNAME (repeatable)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l datatype -s t -x -d 'Only files of datatype ID (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l tag -x -d 'Only files with metadata tag TAG (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l name -x -d 'Only files whose basename matches GLOB, e.g. \'*.json\' (repeatable)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l since -x -d 'Only files created on or after DATE (YYYY-MM-DD or ISO 8601 time; UTC)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l until -x -d 'Only files created on or before DATE (a whole day is included)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l format -s f -x -a 'table json jsonl csv' -d 'Output format (default: table on a terminal, jsonl otherwise)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l limit -s n -x -d 'Stop after N records (and fetch no more pages)'
complete -c ohpub -n '__fish_seen_subcommand_from list' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from list' -a 'files projects datatypes members'

# ohpub mirror
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l project -s p -x -d 'Only files of project ID (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l user -s u -x -d 'Only files of member USERNAME (repeatable)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l datatype -s t -x -d 'Only files of datatype ID (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l tag -x -d 'Only files with metadata tag TAG (repeatable: any of them)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l name -x -d 'Only files whose basename matches GLOB, e.g. \'*.json\' (repeatable)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l since -x -d 'Only files created on or after DATE (YYYY-MM-DD or ISO 8601 time; UTC)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l until -x -d 'Only files created on or before DATE (a whole day is included)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l jobs -s j -x -d 'Parallel storage transfers'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l dry-run -s n -d 'Show the plan (to download: count and bytes; to rename; to remove; unchanged) and change nothing'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l delete -d 'Delete local files that a complete listing no longer has (default: keep them, marked removed-upstream)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l no-delete -d 'Turn off --delete'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l max-size -x -d 'Skip files larger than SIZE: 500M = 500 MiB, 2G, 500MB = 500*10^6 bytes'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l strict -d 'Files Open Humans reports unavailable fail the run (exit 1)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l no-strict -d 'Turn off --strict'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l format -s f -x -a 'text jsonl' -d 'text: a summary line; jsonl: also one record per file on stdout (with --dry-run, a totals record last)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l multi-thread-cutoff -x -d 'Fetch files of at least SIZE as parallel ranges over several connections (default 67.1 MB: 64M)'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from mirror' -a '(__fish_complete_directories)'

# ohpub fetch
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l dir -s d -x -a '(__fish_complete_directories)' -d 'Directory to write <basename> into (created if missing)'
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l output -s o -r -F -d 'Write the one file to PATH; \'-\' streams it to stdout'
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l force -d 'Overwrite an existing file with other content at the target'
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l no-force -d 'Turn off --force'
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l multi-thread-cutoff -x -d 'Fetch files of at least SIZE as parallel ranges over several connections (default 67.1 MB: 64M)'
complete -c ohpub -n '__fish_seen_subcommand_from fetch' -l help -s h -d 'Show the help and exit'

# ohpub verify
complete -c ohpub -n '__fish_seen_subcommand_from verify' -l format -s f -x -a 'text jsonl' -d 'text: problems and a summary; jsonl: one record per file'
complete -c ohpub -n '__fish_seen_subcommand_from verify' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from verify' -a '(__fish_complete_directories)'

# ohpub status
complete -c ohpub -n '__fish_seen_subcommand_from status' -l max-age -x -d 'Exit 1 when the last complete run ended longer ago than DURATION (with a unit: 90m, 26h, 2d), or never did'
complete -c ohpub -n '__fish_seen_subcommand_from status' -l format -s f -x -a 'text json' -d 'text for people, json for scripts'
complete -c ohpub -n '__fish_seen_subcommand_from status' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from status' -a '(__fish_complete_directories)'

# ohpub help
complete -c ohpub -n '__fish_seen_subcommand_from help' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from help' -a 'list mirror fetch verify status help completion'

# ohpub completion
complete -c ohpub -n '__fish_seen_subcommand_from completion' -l help -s h -d 'Show the help and exit'
complete -c ohpub -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'
