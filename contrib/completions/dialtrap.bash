# bash completion for dialtrap
# Generated from the flag sets dialtrap parses; do not edit (dialtrap completion SHELL).
_dialtrap() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=""
    COMPREPLY=()
    if ((COMP_CWORD > 1)); then
        case ${COMP_WORDS[1]} in
        check) cmd=check ;;
        export) cmd=export ;;
        import) cmd=import ;;
        migrate) cmd=migrate ;;
        peers) cmd=peers ;;
        top) cmd=top ;;
        health) cmd=health ;;
        version) cmd=version ;;
        block) cmd=block ;;
        bgp) cmd=bgp ;;
        completion) cmd=completion ;;
        esac
    fi
    if [[ $cmd == block && ${COMP_WORDS[2]} == status ]] && ((COMP_CWORD > 2)); then cmd="block status"; fi
    if [[ $cmd == bgp && ${COMP_WORDS[2]} == status ]] && ((COMP_CWORD > 2)); then cmd="bgp status"; fi
    case "$cmd|$prev" in
    "|--db-file"|"|-f"|"|--json-log-file"|"|-l"|"|--tls-cert"|"|-t"|"|--tls-key"|"|-k"|"|--config"|"|-g"|"|--api-token-file"|"|--ready-file"|"|--cpu-profile")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "|--bootstrap"|"|-b"|"|--oauth2-client-id"|"|-i"|"|--oauth2-client-secret"|"|-c"|"|--webhook-url"|"|-w"|"|--sip-tls-addr"|"|-z"|"|--sip-addr"|"|--api-addr"|"|--api-token"|"|--alert-window"|"|--alert-min-count"|"|--alert-source"|"|--alert-webhook"|"|--alert-webhook-secret"|"|--alert-slack"|"|--number-match"|"|--home-country"|"|--store"|"|--store-spool-max"|"|--webhook-token-url"|"|--webhook-audience"|"|--webhook-secret"|"|--webhook-spool-max"|"|--webhook-concurrency"|"|--webhook-timeout"|"|--webhook-max-backoff"|"|--p2p-addr"|"|--p2p-trust"|"|--p2p-min-sightings"|"|--p2p-rate"|"|--p2p-catchup"|"|--opendht-addr"|"|--opendht-bootstrap"|"|--opendht-min-sightings"|"|--opendht-rate"|"|--retention"|"|--commit-wait"|"|--fold-window"|"|--persona"|"|--syslog-addr"|"|--event-compat"|"|--never-block"|"|--never-block-number"|"|--bgp-asn"|"|--bgp-router-id"|"|--bgp-listen"|"|--bgp-neighbor"|"|--bgp-next-hop"|"|--bgp-community"|"|--bgp-max-prefixes"|"|--bgp-max-per-ipv6-net"|"|--bgp-max-received"|"|--bgp-ttl"|"|--bgp-verified"|"|--bgp-source"|"|--bgp-min-count"|"|--policy-addr"|"|--policy-deny"|"|--policy-min-count"|"|--policy-caller-header"|"|--policy-source"|"|--policy-trusted-hops"|"|--policy-allow"|"|--sip-max-conns"|"|--sip-max-conns-per-ip"|"|--sip-idle-timeout"|"|--sip-message-timeout"|"|--sip-read-buffer"|"|--sip-reply-rate"|"|--sip-reply-burst"|"|--api-max-conns"|"|--api-max-conns-per-ip"|"|--queue-max-bytes")
        return ;;
    "check|--db-file"|"check|-f"|"check|--config"|"check|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "check|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "check|--store"|"check|--api-url"|"check|--api-token"|"check|--timeout"|"check|--number-match")
        return ;;
    "export|--db-file"|"export|-f"|"export|--output"|"export|-o"|"export|--config"|"export|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "export|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "export|--store"|"export|--format"|"export|--since")
        return ;;
    "import|--db-file"|"import|-f"|"import|--config"|"import|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "import|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "import|--store"|"import|--tz"|"import|--home-country")
        return ;;
    "migrate|--config"|"migrate|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "migrate|--from"|"migrate|--to"|"migrate|--state"|"migrate|--batch"|"migrate|--home-country")
        return ;;
    "peers|--config"|"peers|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "peers|--api-url"|"peers|--api-token"|"peers|--api-addr"|"peers|--timeout")
        return ;;
    "top|--config"|"top|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "top|--api-url"|"top|--api-token"|"top|--api-addr"|"top|--timeout"|"top|--interval"|"top|--since"|"top|--rows")
        return ;;
    "health|--config"|"health|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "health|--api-url"|"health|--api-token"|"health|--api-addr"|"health|--timeout")
        return ;;
    "block|--state-file"|"block|--node-token-file"|"block|--config"|"block|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "block|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "block|--table"|"block|--set4"|"block|--set6"|"block|--node"|"block|--api-token"|"block|--ttl"|"block|--verified"|"block|--source"|"block|--min-count"|"block|--never-block"|"block|--max-elements")
        return ;;
    "block status|--state-file"|"block status|--config"|"block status|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "block status|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "block status|--table"|"block status|--set4"|"block status|--set6")
        return ;;
    "bgp|--node-token-file"|"bgp|--status-file"|"bgp|--config"|"bgp|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "bgp|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    "bgp|--bgp-asn"|"bgp|--bgp-router-id"|"bgp|--bgp-listen"|"bgp|--bgp-neighbor"|"bgp|--bgp-next-hop"|"bgp|--bgp-community"|"bgp|--bgp-max-prefixes"|"bgp|--bgp-max-per-ipv6-net"|"bgp|--bgp-max-received"|"bgp|--bgp-ttl"|"bgp|--bgp-verified"|"bgp|--bgp-source"|"bgp|--bgp-min-count"|"bgp|--node"|"bgp|--api-token"|"bgp|--never-block")
        return ;;
    "bgp status|--status-file"|"bgp status|--config"|"bgp status|-g")
        COMPREPLY=($(compgen -f -- "$cur")); return ;;
    "bgp status|--data-dir")
        COMPREPLY=($(compgen -d -- "$cur")); return ;;
    esac
    local words
    case $cmd in
    "") words="--db-file -f --json-log -j --json-log-file -l --p2p -p --bootstrap -b --oauth2-client-id -i --oauth2-client-secret -c --api -a --webhook-url -w --sip-responsive -r --enrich --sip-disable -R --tls-cert -t --tls-key -k --sip-tls-addr -z --config -g --syslog -s --verbose -v --debug -d --version -V --sip-addr --sip-tls --api-addr --api-token --api-token-file --alert-window --alert-min-count --alert-source --alert-webhook --alert-webhook-secret --alert-slack --alert-syslog --number-match --home-country --data-dir --store --store-spool-max --webhook-token-url --webhook-audience --webhook-peer-events --webhook-secret --webhook-spool-max --webhook-concurrency --webhook-timeout --webhook-max-backoff --p2p-addr --p2p-trust --p2p-min-sightings --p2p-rate --p2p-catchup --opendht --opendht-addr --opendht-bootstrap --opendht-publish --opendht-relay --opendht-min-sightings --opendht-rate --metrics --retention --commit-wait --fold-window --persona --syslog-addr --json-log-peer-events --event-compat --syslog-peer-events --ready-file --never-block --never-block-defaults --never-block-number --p2p-share-unverified --bgp-asn --bgp-router-id --bgp-listen --bgp-neighbor --bgp-next-hop --bgp-community --bgp-max-prefixes --bgp-max-per-ipv6-net --bgp-max-received --bgp-ttl --bgp-verified --bgp-source --bgp-min-count --policy-addr --policy-deny --policy-min-count --policy-verified-only --policy-caller-header --policy-fail-closed --policy-source --policy-trusted-hops --policy-allow --sip-max-conns --sip-max-conns-per-ip --sip-idle-timeout --sip-message-timeout --sip-read-buffer --sip-reply-rate --sip-reply-burst --api-max-conns --dashboard --api-max-conns-per-ip --queue-max-bytes --cpu-profile --help -h" ;;
    "check") words="--db-file -f --data-dir --store --api-url --api-token --timeout --number-match --quiet -q --config -g --help -h" ;;
    "export") words="--db-file -f --data-dir --store --format --output -o --since --config -g --help -h" ;;
    "import") words="--db-file -f --data-dir --store --tz --home-country --config -g --help -h" ;;
    "migrate") words="--from --to --state --restart --batch --home-country --quiet -q --config -g --help -h" ;;
    "peers") words="--api-url --api-token --api-addr --timeout --json --config -g --help -h" ;;
    "top") words="--api-url --api-token --api-addr --timeout --interval --since --rows --once --config -g --help -h" ;;
    "health") words="--api-url --api-token --api-addr --timeout --quiet -q --config -g --help -h" ;;
    "version") words="--help -h" ;;
    "block") words="--ipset --table --set4 --set6 --no-rule --data-dir --state-file --node --api-token --node-token-file --ttl --verified --source --min-count --never-block --never-block-defaults --max-elements --dry-run --flush-on-exit --verbose -v --debug -d --config -g --help -h status" ;;
    "block status") words="--ipset --table --set4 --set6 --no-rule --data-dir --state-file --json --config -g --help -h" ;;
    "bgp") words="--bgp-asn --bgp-router-id --bgp-listen --bgp-neighbor --bgp-next-hop --bgp-community --bgp-max-prefixes --bgp-max-per-ipv6-net --bgp-max-received --bgp-ttl --bgp-verified --bgp-source --bgp-min-count --node --api-token --node-token-file --never-block --never-block-defaults --data-dir --status-file --verbose -v --debug -d --config -g --help -h status" ;;
    "bgp status") words="--data-dir --status-file --json --config -g --help -h" ;;
    "completion") words="--help -h bash zsh fish" ;;
    esac
    if ((COMP_CWORD == 1)) && [[ $cur != -* ]]; then words="check export import migrate peers top health version block bgp completion"; fi
    if [[ $cmd == "import" && $cur != -* ]]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _dialtrap dialtrap
