#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: the real attack tools the
# end-to-end tests run (SIPp as Debian's sip-tester, sipvicious, sipsak), rsyslog and Fail2Ban,
# iproute2, nftables and ipset for the firewall tests, BIRD 2, gobgpd and Kamailio (with its
# http_client module) for the BGP, policy-agent and guide tests, PostgreSQL for its store's
# tests, Chromium and its WebDriver server for the dashboard test, rpm, systemd-analyze, man
# and logrotate for the package test, and a pinned staticcheck. Safe to run again: it installs
# only what is missing.
set -euo pipefail

STATICCHECK_VERSION=v0.7.0 # 2026.1, which knows Go 1.26

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v svmap >/dev/null 2>&1 || need_apt+=(sipvicious)
command -v sipsak >/dev/null 2>&1 || need_apt+=(sipsak)
# The syslog test runs its own rsyslogd and fail2ban-server (private sockets and config).
command -v rsyslogd >/dev/null 2>&1 || need_apt+=(rsyslog)
command -v fail2ban-server >/dev/null 2>&1 || need_apt+=(fail2ban)
# Firewall tests (feeds, the block agent) run in network namespaces of their own.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ipset >/dev/null 2>&1 || need_apt+=(ipset)
# BGP tests peer with real speakers on loopback: BIRD 2 and gobgpd (its CLI is the baseline of
# the announcement benchmark). The SIP policy agent is tested behind a real Kamailio.
command -v bird >/dev/null 2>&1 || need_apt+=(bird2)
command -v gobgpd >/dev/null 2>&1 || need_apt+=(gobgpd)
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
# The PBX guide's Kamailio configuration asks the REST API through http_client.
ls /usr/lib/*/kamailio/modules/http_client.so >/dev/null 2>&1 || need_apt+=(kamailio-utils-modules)
# The PostgreSQL store's tests start their own server (initdb in a temporary directory, their
# own port on 127.0.0.1): only the binaries are needed, never the cluster Debian creates.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# The dashboard test drives a real headless Chromium through its WebDriver server.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The OpenDHT bridge (-tags opendht, cgo) links Debian's libopendht-c; its tests talk to
# Debian's dhtnode, and cgo needs a C and C++ compiler.
[ -e /usr/include/opendht/opendht_c.h ] || need_apt+=(libopendht-c-dev libopendht-dev)
command -v dhtnode >/dev/null 2>&1 || need_apt+=(dhtnode)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The generated shell completions are loaded by the real shells, the manual page by groff.
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
# The package test (test/pkg) inspects the .rpm with rpm, checks the units with
# systemd-analyze (verify looks the man page of Documentation= up with man) and runs the
# packaged logrotate config.
command -v rpm >/dev/null 2>&1 || need_apt+=(rpm)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v man >/dev/null 2>&1 || need_apt+=(man-db)
command -v logrotate >/dev/null 2>&1 || need_apt+=(logrotate)

if ((${#need_apt[@]})); then
	echo "test-deps: installing ${need_apt[*]} with apt-get" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
	# The tests start their own daemons on their own ports; the packages' services (where a
	# service manager started them) would hold 5060, 179 and 5432 and run for nothing.
	for svc in kamailio bird gobgpd postgresql; do
		$sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
	done
fi

gobin="$(go env GOPATH)/bin"
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "($STATICCHECK_VERSION)"; then
	echo "test-deps: installing staticcheck $STATICCHECK_VERSION" >&2
	GOFLAGS=-buildvcs=false go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
