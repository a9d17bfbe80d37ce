// Package config builds the node's Config from, in order of precedence, command-line flags,
// DIALTRAP_* environment variables (and the reference product's names as deprecated
// fallbacks), an optional TOML file and the defaults, and validates the result.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// EnvPrefix starts every environment variable the node reads.
const EnvPrefix = "DIALTRAP_"

// legacyEnvPrefix is the reference product's prefix, read as a fallback so operators can
// migrate without renaming their environment.
const legacyEnvPrefix = "SENTRYPEER_"

// legacyNames are reference env var suffixes that differ from ours.
var legacyNames = map[string][]string{
	"p2p":       {"PEER_TO_PEER"},
	"bootstrap": {"BOOTSTRAP_NODE"},
}

// Defaults that other packages and the help text share.
const (
	DefaultDBFile      = "dialtrap.db"
	DefaultJSONLogFile = "dialtrap_json.log"
	DefaultSIPAddr     = ":5060"
	DefaultSIPTLSAddr  = ":5061"
	DefaultAPIAddr     = "127.0.0.1:8082"
	// DefaultCommitWait is --commit-wait: at the rates scanners send (100-150 probes/s) a
	// transaction then holds several events, and a lookup waits at most this for a new one.
	DefaultCommitWait = 100 * time.Millisecond
)

// ErrHelp is returned by Load when -h was given; the usage has been written.
var ErrHelp = pflag.ErrHelp

// Config is everything the node can be told.
type Config struct {
	DBFile             string
	JSONLog            bool
	JSONLogFile        string
	P2P                bool
	Bootstrap          []string
	OAuth2ClientID     string
	OAuth2ClientSecret string
	API                bool
	WebhookURL         string
	SIPResponsive      bool
	Enrich             bool // name each probe's tool and find its payloads on capture
	SIPDisable         bool
	TLSCert            string
	TLSKey             string
	SIPTLSAddr         string
	ConfigFile         string
	Syslog             bool
	Verbose            bool
	Debug              bool
	Version            bool

	SIPAddr      string
	SIPTLS       bool
	APIAddr      string
	APIToken     []string // SECRET, NAME:SECRET or NAME:SECRET:lookup
	APITokenFile string
	// Hit alerts: a lookup that matched notifies these, by these rules.
	AlertWindow        time.Duration
	AlertMinCount      int
	AlertSource        string
	AlertWebhook       string
	AlertWebhookSecret string
	AlertSlack         string
	AlertSyslog        bool
	NumberMatch        string // exact or national: the default match of number lookups
	HomeCountry        string // ISO region national dial strings are read in (analytics)
	DataDir            string
	Store              string
	StoreSpoolMax      int64 // bytes of the disk spool a PostgreSQL store's events wait in while it is away
	WebhookTokenURL    string
	WebhookAudience    string
	WebhookPeerEvents  bool
	WebhookSecret      string
	WebhookSpoolMax    int64
	WebhookConcurrent  int
	WebhookTimeout     time.Duration
	WebhookMaxBackoff  time.Duration
	P2PAddr            []string
	P2PTrust           []string
	P2PMinSightings    int
	P2PRate            float64
	P2PCatchup         time.Duration
	// The bridge to the reference product's OpenDHT network (a binary built with -tags
	// opendht): join, bind, bootstrap, publish own events, relay its events to libp2p peers.
	OpenDHT             bool
	OpenDHTAddr         string
	OpenDHTBootstrap    []string
	OpenDHTPublish      bool
	OpenDHTRelay        bool
	OpenDHTMinSightings int
	OpenDHTRate         float64
	Metrics             bool
	Retention           time.Duration
	FoldWindow          time.Duration
	CommitWait          time.Duration
	Persona             string
	SyslogAddr          string
	// Peer events reach the JSON log and syslog only when asked: a remote node must never
	// cause a local Fail2Ban ban.
	JSONLogPeerEvents bool
	SyslogPeerEvents  bool
	// EventCompat is the spelling of the JSON log's and the webhook's objects: "" or none
	// (the contract), ip-port (address:port in source_ip and destination_ip, for T-Pot).
	EventCompat string
	// ReadyFile, when set, is written (JSON, atomically) with every bound address once the
	// node listens, for scripts and tests that start it on port 0.
	ReadyFile string

	// Never-block lists: recorded, never in a feed, a firewall set or a share.
	NeverBlock         []string // addresses, CIDR prefixes, files of them
	NeverBlockDefaults bool     // loopback, private, link-local, multicast, documentation ranges, own addresses
	NeverBlockNumber   []string // numbers, or prefixes ending in *
	// P2PShareUnverified shares events whose source address is not proven (passive UDP).
	P2PShareUnverified bool

	// BGP blackhole speaker (off unless BGPNeighbor or BGPListen is set).
	BGPASN         uint32
	BGPRouterID    string
	BGPListen      string
	BGPNeighbor    []string // "ADDRESS as ASN [port N] [password-file PATH] [ttl-security] [multihop N] [passive]"
	BGPNextHop     []string // one IPv4 and/or one IPv6
	BGPCommunity   []string // ASN:VALUE, added to BLACKHOLE and NO_EXPORT
	BGPMaxPrefixes int
	BGPMaxPerNet6  int // /128s announced from one IPv6 /64
	BGPMaxReceived int // routes a router may send per family before its session is closed
	BGPTTL         time.Duration
	BGPVerified    string // only, any
	BGPSource      string // trusted, local, all
	BGPMinCount    int

	// SIP policy agent (off unless PolicyAddr is set).
	PolicyAddr         string
	PolicyDeny         string // 403, 404, or a sip:/sips:/tel: URI to redirect to
	PolicyMinCount     int
	PolicyVerifiedOnly bool
	PolicyCallerHeader string
	PolicyFailClosed   bool
	PolicySource       string   // trusted, local, all
	PolicyTrustedHops  int      // Vias at the top that are the operator's proxies
	PolicyAllow        []string // CIDRs of the PBXs that may ask

	// Capture tuning.
	SIPMaxConns       int
	SIPMaxConnsPerIP  int
	SIPIdleTimeout    time.Duration
	SIPMessageTimeout time.Duration
	SIPReadBuffer     int
	SIPReplyRate      float64
	SIPReplyBurst     int
	APIMaxConns       int
	APIMaxConnsPerIP  int
	// Dashboard serves the web dashboard at / of the API (with -a); on by default.
	Dashboard bool
	// QueueMaxBytes is what all the sinks' queues together may hold in memory.
	QueueMaxBytes int64

	CPUProfile string // write a Go CPU profile here until exit (performance reports)

	// Notices are warnings for the operator found while loading (deprecated names).
	Notices []string
}

// flagSet declares every option; the long name is also the TOML key and, upper-cased, the
// env var suffix.
func flagSet(c *Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("dialtrap", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVarP(&c.DBFile, "db-file", "f", DefaultDBFile, "SQLite database path (default: dialtrap.db in --data-dir; a path given is taken as given)")
	fs.BoolVarP(&c.JSONLog, "json-log", "j", false, "append one JSON object per event to the JSON log")
	fs.StringVarP(&c.JSONLogFile, "json-log-file", "l", DefaultJSONLogFile, "JSON log path (default: dialtrap_json.log in --data-dir; setting it enables -j)")
	fs.BoolVarP(&c.P2P, "p2p", "p", false, "join the peer-to-peer network: share own events and receive others'")
	fs.StringSliceVarP(&c.Bootstrap, "bootstrap", "b", nil, "bootstrap peer multiaddr(s), repeatable or comma-separated")
	fs.StringVarP(&c.OAuth2ClientID, "oauth2-client-id", "i", "", "OAuth2 client id for the webhook bearer token")
	fs.StringVarP(&c.OAuth2ClientSecret, "oauth2-client-secret", "c", "", "OAuth2 client secret (needs -i)")
	fs.BoolVarP(&c.API, "api", "a", false, "serve the REST API")
	fs.StringVarP(&c.WebhookURL, "webhook-url", "w", "", "POST each event as JSON to this URL")
	fs.BoolVarP(&c.SIPResponsive, "sip-responsive", "r", false, "answer probes like a PBX (default: passive, never reply)")
	fs.BoolVar(&c.Enrich, "enrich", true, "name each probe's tool from its shape and find payloads in it (tool, ua_spoofed, payload; about 1.5 µs a probe)")
	fs.BoolVarP(&c.SIPDisable, "sip-disable", "R", false, "run no SIP listeners (API-only or P2P-only node)")
	fs.StringVarP(&c.TLSCert, "tls-cert", "t", "", "TLS certificate PEM for SIP over TLS (default: self-signed, made in --data-dir)")
	fs.StringVarP(&c.TLSKey, "tls-key", "k", "", "TLS key PEM")
	fs.StringVarP(&c.SIPTLSAddr, "sip-tls-addr", "z", DefaultSIPTLSAddr, "SIP over TLS listen address")
	fs.StringVarP(&c.ConfigFile, "config", "g", "", "TOML config file (keys are the long option names)")
	fs.BoolVarP(&c.Syslog, "syslog", "s", false, "write one syslog line per event (for Fail2Ban)")
	fs.BoolVarP(&c.Verbose, "verbose", "v", false, "info-level logs")
	fs.BoolVarP(&c.Debug, "debug", "d", false, "debug logs, including each SIP message")
	fs.BoolVarP(&c.Version, "version", "V", false, "print name, version, commit and Go version")

	fs.StringVar(&c.SIPAddr, "sip-addr", DefaultSIPAddr, "SIP UDP and TCP listen address (empty host: IPv4 and IPv6)")
	fs.BoolVar(&c.SIPTLS, "sip-tls", true, "run the SIP TLS listener")
	fs.StringVar(&c.APIAddr, "api-addr", DefaultAPIAddr, "REST API listen address")
	fs.StringSliceVar(&c.APIToken, "api-token", nil, "require 'Authorization: Bearer <secret>' on the API (except /health-check): SECRET (named default), NAME:SECRET, or NAME:SECRET:lookup for a token that may only ask the lookup routes (repeatable; hits and logs show the name)")
	fs.StringVar(&c.APITokenFile, "api-token-file", "", "read API tokens from this file, one a line in the forms of --api-token ('#' comments); it must not be readable by others (chmod 600); re-read on SIGHUP, so one token can be revoked without touching the others")
	fs.DurationVar(&c.AlertWindow, "alert-window", 10*time.Minute, "hit alerts: notify on the first lookup per matched entry in this window")
	fs.IntVar(&c.AlertMinCount, "alert-min-count", 1, "hit alerts: only for entries seen at least this often")
	fs.StringVar(&c.AlertSource, "alert-source", "trusted", "hit alerts: only for entries seen by: local (this node's trap), trusted (it or trusted peers), all")
	fs.StringVar(&c.AlertWebhook, "alert-webhook", "", "POST each hit alert as JSON to this URL (spooled in --data-dir/alert-spool, retried until taken)")
	fs.StringVar(&c.AlertWebhookSecret, "alert-webhook-secret", "", "sign each alert POST as --webhook-secret signs events (X-Dialtrap-Signature)")
	fs.StringVar(&c.AlertSlack, "alert-slack", "", "post each hit alert to this Slack or Mattermost incoming webhook URL ({\"text\": ...}; spooled too)")
	fs.BoolVar(&c.AlertSyslog, "alert-syslog", false, "write one syslog line per hit alert (ident dialtrap; --syslog-addr applies)")
	fs.StringVar(&c.NumberMatch, "number-match", "exact", "default match of number lookups: exact, or national (also +, 00, 011, 9011, 900, 9... prefixed forms)")
	fs.StringVar(&c.HomeCountry, "home-country", "", "ISO 3166 code of the country the trap poses in (DE): numbers dialled without an international prefix are read as its national numbers in the analytics")
	fs.StringVar(&c.DataDir, "data-dir", ".", "directory for the node id, keys, certificate and default database")
	fs.StringVar(&c.Store, "store", "sqlite", "event store: sqlite, or a postgres:// URL")
	fs.Int64Var(&c.StoreSpoolMax, "store-spool-max", 1<<30, "bytes of events kept on disk in --data-dir/store-spool while a PostgreSQL store is unreachable, written to it when it is back; beyond it capture holds events in memory, then drops the oldest")
	fs.StringVar(&c.WebhookTokenURL, "webhook-token-url", "", "OAuth2 client-credentials token endpoint")
	fs.StringVar(&c.WebhookAudience, "webhook-audience", "", "OAuth2 audience parameter")
	fs.BoolVar(&c.WebhookPeerEvents, "webhook-peer-events", false, "also send events learned from peers to the webhook")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "sign each webhook POST: X-Dialtrap-Signature: sha256=HMAC(secret, X-Dialtrap-Timestamp + \".\" + body)")
	fs.Int64Var(&c.WebhookSpoolMax, "webhook-spool-max", 256<<20, "bytes of undelivered webhook events kept on disk in --data-dir; beyond it the oldest are dropped")
	fs.IntVar(&c.WebhookConcurrent, "webhook-concurrency", 4, "webhook requests in flight at once")
	fs.DurationVar(&c.WebhookTimeout, "webhook-timeout", 10*time.Second, "time limit of one webhook request (token fetch included)")
	fs.DurationVar(&c.WebhookMaxBackoff, "webhook-max-backoff", 5*time.Minute, "longest wait between webhook retries while the endpoint fails (the wait doubles from 1s, with jitter)")
	fs.StringSliceVar(&c.P2PAddr, "p2p-addr", []string{"/ip4/0.0.0.0/udp/4222/quic-v1", "/ip4/0.0.0.0/tcp/4222"}, "libp2p listen multiaddrs")
	fs.StringSliceVar(&c.P2PTrust, "p2p-trust", nil, "peer IDs whose events count at once")
	fs.IntVar(&c.P2PMinSightings, "p2p-min-sightings", 1, "distinct peers that must report an IP or number before it counts")
	fs.Float64Var(&c.P2PRate, "p2p-rate", 200, "events per second accepted from one originating node (bursts of 10 seconds' worth); the excess is ignored")
	fs.DurationVar(&c.P2PCatchup, "p2p-catchup", 24*time.Hour, "how far back to fetch peers' events on meeting them (0 turns catch-up requests off; at most 720h)")
	fs.BoolVar(&c.OpenDHT, "opendht", false, "join the reference product's OpenDHT network and take the bad actors its nodes share (unsigned, so untrusted: checked, rate limited and held like peers' events); needs a binary built with -tags opendht")
	fs.StringVar(&c.OpenDHTAddr, "opendht-addr", ":4222", "UDP port of the OpenDHT node (:PORT; it listens on every address)")
	fs.StringSliceVar(&c.OpenDHTBootstrap, "opendht-bootstrap", nil, "OpenDHT nodes to join through, host:port (repeatable); there is no built-in list")
	fs.BoolVar(&c.OpenDHTPublish, "opendht-publish", false, "also put this node's shareable events on OpenDHT, in the reference's 13-key JSON")
	fs.BoolVar(&c.OpenDHTRelay, "opendht-relay", false, "publish events received from OpenDHT to libp2p peers too, signed by this node (needs -p)")
	fs.IntVar(&c.OpenDHTMinSightings, "opendht-min-sightings", 0, "OpenDHT counts as one source (its node ids are the writers' to choose): above 1, its reports count only for an IP or number this node or a trusted peer has seen (0: as --p2p-min-sightings)")
	fs.Float64Var(&c.OpenDHTRate, "opendht-rate", 10, "events a second all of OpenDHT may bring (bursts of 10 seconds' worth); the excess is refused, counted")
	fs.BoolVar(&c.Metrics, "metrics", false, "serve Prometheus metrics at /metrics on the API listener (needs -a; --api-token guards it as every route); off: /metrics answers 404")
	fs.Var((*days)(&c.Retention), "retention", "delete raw events older than this, e.g. 90d or 2160h; the counts behind lookups, feeds and statistics stay (0 keeps everything)")
	fs.DurationVar(&c.CommitWait, "commit-wait", DefaultCommitWait, "an event that finds the store's and the JSON log's queues empty waits up to this long for others to be written with it, in one transaction and one write (group commit; a full batch is written at once): lookups see a new event at most this much later; 0 writes each at once; at most 1s")
	fs.DurationVar(&c.FoldWindow, "fold-window", time.Second, "probes identical in source, destination, transport, method, number and User-Agent within this time of the first are stored as one event with a repeat_count (the first is passed on at once; every probe is counted); 0 keeps one event a probe; at most 1m")
	fs.StringVar(&c.Persona, "persona", "", "Server/User-Agent string of responsive mode (default a common PBX banner)")
	fs.StringVar(&c.SyslogAddr, "syslog-addr", "", "syslog destination: unix:///path, udp://host:port or tcp://host:port (default: local syslog)")
	fs.BoolVar(&c.JSONLogPeerEvents, "json-log-peer-events", false, "also write events learned from peers to the JSON log")
	fs.StringVar(&c.EventCompat, "event-compat", "none", "spelling of the JSON log's and the webhook's events: none (bare addresses, ports in source_port and destination_port) or ip-port (source_ip and destination_ip as address:port, [IPv6]:port, for T-Pot's pipelines; the store, API, peers and export keep bare addresses)")
	fs.BoolVar(&c.SyslogPeerEvents, "syslog-peer-events", false, "also write events learned from peers to syslog (they can then cause Fail2Ban bans here)")
	fs.StringVar(&c.ReadyFile, "ready-file", "", "once listening, write the bound addresses here as JSON (for scripts starting the node on port 0)")
	fs.StringSliceVar(&c.NeverBlock, "never-block", nil, "addresses, CIDR prefixes or files of them (one a line) that are recorded but never reach a feed, a firewall set or a peer (repeatable)")
	fs.BoolVar(&c.NeverBlockDefaults, "never-block-defaults", true, "also never block loopback, private, shared, link-local, multicast and documentation ranges and this host's own addresses (=false to opt out)")
	fs.StringSliceVar(&c.NeverBlockNumber, "never-block-number", nil, "numbers (or prefixes ending in *) never put in a number feed, beside emergency and short numbers (repeatable)")
	fs.BoolVar(&c.P2PShareUnverified, "p2p-share-unverified", false, "also share events whose source address is not proven (passive-mode UDP, which anyone can forge)")

	AddBGPFlags(fs, c)
	fs.StringVar(&c.PolicyAddr, "policy-addr", "", "run the SIP policy agent on this host:port, UDP and TCP (e.g. 127.0.0.1:5070): a PBX sends it INVITEs and gets 302 (go ahead) or a refusal")
	fs.StringVar(&c.PolicyDeny, "policy-deny", "403", "the policy agent's answer to a known-bad number or caller: 403, 404, or a sip:, sips: or tel: URI to redirect the call to (an IVR)")
	fs.IntVar(&c.PolicyMinCount, "policy-min-count", 1, "the policy agent refuses a number or caller seen at least this often")
	fs.BoolVar(&c.PolicyVerifiedOnly, "policy-verified-only", false, "the policy agent counts a number or caller address only when its sightings include a proven (unforgeable) one")
	fs.StringVar(&c.PolicyCallerHeader, "policy-caller-header", "X-Dialtrap-Caller", "header a PBX puts the caller's IP address in; checked beside the Via below --policy-trusted-hops")
	fs.BoolVar(&c.PolicyFailClosed, "policy-fail-closed", false, "refuse calls when the store cannot be read (default: let them through)")
	fs.StringVar(&c.PolicySource, "policy-source", "trusted", "whose sightings make the policy agent refuse: trusted (own and trusted peers'), local, all (any peer could then choose which calls you refuse)")
	fs.IntVar(&c.PolicyTrustedHops, "policy-trusted-hops", 1, "Via headers at the top that are your own proxies, the one asking included: the next Via is the caller's")
	fs.StringSliceVar(&c.PolicyAllow, "policy-allow", nil, "addresses or CIDR prefixes of the PBXs and proxies that may ask the policy agent (default: anyone who can reach it)")

	fs.IntVar(&c.SIPMaxConns, "sip-max-conns", 4096, "most concurrent SIP TCP/TLS connections")
	fs.IntVar(&c.SIPMaxConnsPerIP, "sip-max-conns-per-ip", 64, "most concurrent SIP TCP/TLS connections from one IP")
	fs.DurationVar(&c.SIPIdleTimeout, "sip-idle-timeout", 60*time.Second, "close a SIP TCP/TLS connection idle this long")
	fs.DurationVar(&c.SIPMessageTimeout, "sip-message-timeout", 10*time.Second, "a SIP message over TCP/TLS must arrive whole within this")
	fs.IntVar(&c.SIPReadBuffer, "sip-read-buffer", 32<<20, "UDP socket receive buffer in bytes: it absorbs bursts of work (a flood from many sources opens a fold group for each of them at once)")
	fs.Float64Var(&c.SIPReplyRate, "sip-reply-rate", 20, "responsive mode: replies a second to one UDP source (an IPv4 address, an IPv6 /64); an unproven source also gets back at most 3x the bytes it sent")
	fs.IntVar(&c.SIPReplyBurst, "sip-reply-burst", 40, "responsive mode: replies one UDP source may get at once")
	fs.IntVar(&c.APIMaxConns, "api-max-conns", 4096, "most concurrent REST API connections (when all are taken, the longest idle is closed for a new one)")
	fs.BoolVar(&c.Dashboard, "dashboard", true, "serve the web dashboard at / of the REST API (its page needs no token, its data does; =false to turn it off)")
	fs.IntVar(&c.APIMaxConnsPerIP, "api-max-conns-per-ip", 64, "most concurrent REST API connections from one IPv4 address or IPv6 /64")
	fs.Int64Var(&c.QueueMaxBytes, "queue-max-bytes", 256<<20, "bytes of events all outputs' queues may hold in memory (the store's queue half of it, the others an eighth each); beyond it the oldest are dropped, counted")

	fs.StringVar(&c.CPUProfile, "cpu-profile", "", "write a Go CPU profile to this file until exit (for performance reports)")

	fs.BoolP("help", "h", false, "print this help")
	return fs
}

// AddBGPFlags declares the --bgp-* options: the node's and dialtrap bgp's, one set of names
// so that one config file and environment serve both.
func AddBGPFlags(fs *pflag.FlagSet, c *Config) {
	fs.Uint32Var(&c.BGPASN, "bgp-asn", 0, "BGP blackhole speaker: this speaker's AS number (often the routers' own, for iBGP)")
	fs.StringVar(&c.BGPRouterID, "bgp-router-id", "", "BGP router ID: an IPv4 address unique among the routers (usually this host's)")
	fs.StringVar(&c.BGPListen, "bgp-listen", "", "accept BGP sessions on this host:port too (empty: only connect out to the neighbours)")
	fs.StringSliceVar(&c.BGPNeighbor, "bgp-neighbor", nil, "a router to announce blocked addresses to: \"ADDRESS as ASN [port N] [password-file PATH] [ttl-security] [multihop N] [passive] [local ADDRESS]\" (repeatable); turns the speaker on")
	fs.StringSliceVar(&c.BGPNextHop, "bgp-next-hop", nil, "next hop of the announcements: one IPv4 and one IPv6 address the routers send to a discard interface (default 192.0.2.1 and 100::1)")
	fs.StringSliceVar(&c.BGPCommunity, "bgp-community", nil, "more communities (ASN:VALUE) beside BLACKHOLE 65535:666 and NO_EXPORT, e.g. your provider's blackhole community")
	fs.IntVar(&c.BGPMaxPrefixes, "bgp-max-prefixes", 10000, "most addresses announced at once (keep it under the routers' max-prefix limit); beyond it new ones wait, counted")
	fs.IntVar(&c.BGPMaxPerNet6, "bgp-max-per-ipv6-net", 16, "most /128s announced from one IPv6 /64 (one host with a /64 must not fill --bgp-max-prefixes)")
	fs.IntVar(&c.BGPMaxReceived, "bgp-max-received", 100, "routes a router may send per address family before the speaker closes its session (it refuses them all anyway)")
	fs.DurationVar(&c.BGPTTL, "bgp-ttl", 24*time.Hour, "how long an address stays announced after it was last seen")
	fs.StringVar(&c.BGPVerified, "bgp-verified", "only", "announce only addresses that proved they are not forged (only), or any")
	fs.StringVar(&c.BGPSource, "bgp-source", "trusted", "whose sightings count for BGP: trusted (own and trusted peers'), local, all")
	fs.IntVar(&c.BGPMinCount, "bgp-min-count", 1, "announce an address seen at least this often")
}

// EnvName is the environment variable for a long option name.
func EnvName(long string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(long, "-", "_"))
}

// FlagSet returns the node's flags as Load parses them, bound to a throwaway Config: the
// manual, the reference and the shell completions are made from it.
func FlagSet() *pflag.FlagSet {
	return flagSet(&Config{})
}

// InFile reports whether an option may be set in the TOML file.
func InFile(long string) bool {
	return !slices.Contains(notFromFile, long)
}

// LegacyEnvNames are the reference product's environment variables read for an option when
// its DIALTRAP_ one is unset.
func LegacyEnvNames(long string) []string {
	return legacyEnvNames(long)
}

func legacyEnvNames(long string) []string {
	names := []string{legacyEnvPrefix + strings.TrimPrefix(EnvName(long), EnvPrefix)}
	for _, n := range legacyNames[long] {
		names = append(names, legacyEnvPrefix+n)
	}
	return names
}

// notFromFile are options that make no sense in a config file.
var notFromFile = []string{"config", "help", "version"}

// Load parses args (without the program name) and the environment, reads the config file if
// one is named, and validates. getenv is os.LookupEnv outside tests.
func Load(args []string, getenv func(string) (string, bool)) (*Config, error) {
	c := &Config{}
	fs := flagSet(c)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("%w (see dialtrap -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: dialtrap takes only flags, or a subcommand first (see dialtrap -h)", fs.Arg(0))
	}
	if help, _ := fs.GetBool("help"); help {
		return nil, ErrHelp
	}

	var fileVals map[string]string
	path, fromEnv, err := lookupConfigPath(fs, getenv)
	if err != nil {
		return nil, err
	}
	if path != "" {
		if fileVals, err = readFile(fs, path); err != nil {
			return nil, err
		}
		if fromEnv {
			c.ConfigFile = path
		}
	}

	notices, err := fill(fs, getenv, fileVals, path)
	c.Notices = append(c.Notices, notices...)
	if err != nil {
		return nil, err
	}
	// Naming a JSON log file anywhere means the operator wants the JSON log.
	if fs.Changed("json-log-file") {
		c.JSONLog = true
	}
	c.resolvePaths(fs)
	c.Notices = append(c.Notices, offNotices(fs, c)...)
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Usage returns the help text; subcommands is the list of subcommands, one a line, that the
// command adds after the synopsis.
func Usage(subcommands string) string {
	fs := flagSet(&Config{})
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != "version" {
			f.Usage += " [" + EnvName(f.Name) + "]"
		}
	})
	var b strings.Builder
	b.WriteString("Usage: dialtrap [flags]                   run a node\n")
	b.WriteString("       dialtrap SUBCOMMAND [flags] ...    (dialtrap SUBCOMMAND -h for its flags)\n\nSubcommands:\n")
	b.WriteString(subcommands)
	b.WriteString("\n")
	b.WriteString("A SIP honeypot and VoIP fraud-detection node. Short flags combine: dialtrap -draps.\n")
	b.WriteString("Each option is also an environment variable [shown] and a key of the TOML file given with -g.\n")
	b.WriteString("Precedence: flag > environment > config file > default. A boolean env var that is set turns\n")
	b.WriteString("the option on whatever its value, except false, no and off.\n\nFlags:\n")
	b.WriteString(fs.FlagUsages())
	return b.String()
}

func lookupConfigPath(fs *pflag.FlagSet, getenv func(string) (string, bool)) (path string, fromEnv bool, err error) {
	if fs.Lookup("config") != nil && fs.Changed("config") {
		p, _ := fs.GetString("config")
		if p == "" {
			return "", false, errors.New("-g/--config was given an empty path")
		}
		return p, false, nil
	}
	if p, ok := getenv(EnvName("config")); ok && p != "" {
		return p, true, nil
	}
	return "", false, nil
}

// fill sets the flags of fs not given on the command line from the environment, else from
// the config file's values: the one precedence rule of the node and its subcommands.
func fill(fs *pflag.FlagSet, getenv func(string) (string, bool), fileVals map[string]string, path string) (notices []string, err error) {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if v, name, notice, ok := lookupEnv(f.Name, getenv); ok {
			if notice != "" {
				notices = append(notices, notice)
			}
			if f.Value.Type() == "bool" {
				v = strconv.FormatBool(envBool(v))
			}
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s: %w", name, err))
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("config file %s, key %q: %w", path, f.Name, err))
			}
		}
	})
	return notices, errors.Join(errs...)
}

// FillSubcommand gives a subcommand's flags the node's sources: flags not on the command line
// are read from DIALTRAP_<NAME> (and the reference's names), then from the TOML file named by
// the subcommand's -g/--config or DIALTRAP_CONFIG, whose keys for options the subcommand does
// not have are ignored (the file is the node's). It returns deprecation notices.
func FillSubcommand(fs *pflag.FlagSet, getenv func(string) (string, bool)) (notices []string, err error) {
	path, _, err := lookupConfigPath(fs, getenv)
	if err != nil {
		return nil, err
	}
	var fileVals map[string]string
	if path != "" {
		if fileVals, err = readFile(flagSet(&Config{}), path); err != nil {
			return nil, err
		}
	}
	return fill(fs, getenv, fileVals, path)
}

// lookupEnv finds the environment variable of a long option name, or its deprecated
// reference name (then notice says to rename it).
func lookupEnv(long string, getenv func(string) (string, bool)) (val, name, notice string, ok bool) {
	name = EnvName(long)
	if v, ok := getenv(name); ok {
		return v, name, "", true
	}
	for _, old := range legacyEnvNames(long) {
		if v, ok := getenv(old); ok {
			return v, old, fmt.Sprintf("environment variable %s is deprecated: rename it to %s", old, name), true
		}
	}
	return "", "", "", false
}

// envBool is the reference's rule: a set variable enables, whatever its value, except the
// explicit words false, no and off.
func envBool(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "false", "no", "off":
		return false
	}
	return true
}

// readFile decodes the TOML file into flag-value strings, rejecting unknown keys.
func readFile(fs *pflag.FlagSet, path string) (map[string]string, error) {
	raw := map[string]any{}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, fmt.Errorf("read config file %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		f := fs.Lookup(k)
		if f == nil || slices.Contains(notFromFile, k) {
			return nil, fmt.Errorf("config file %s: unknown key %q (keys are the long option names, such as sip-addr; see dialtrap -h)", path, k)
		}
		s, err := tomlString(v)
		if err != nil {
			return nil, fmt.Errorf("config file %s, key %q: %w", path, k, err)
		}
		out[k] = s
	}
	return out, nil
}

func tomlString(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("list holds %T, want strings", e)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("unsupported value type %T", v)
	}
}

// offNotices names options given for a part that is off: the speaker without a
// --bgp-neighbor, the policy agent without --policy-addr.
func offNotices(fs *pflag.FlagSet, c *Config) []string {
	var bgp, pol []string
	fs.Visit(func(f *pflag.Flag) { // the options set by any source (fill marks them changed)
		switch {
		case strings.HasPrefix(f.Name, "bgp-") && f.Name != "bgp-neighbor" && len(c.BGPNeighbor) == 0:
			bgp = append(bgp, "--"+f.Name)
		case strings.HasPrefix(f.Name, "policy-") && f.Name != "policy-addr" && c.PolicyAddr == "":
			pol = append(pol, "--"+f.Name)
		}
	})
	var out []string
	if len(bgp) > 0 {
		out = append(out, fmt.Sprintf("%s set but no --bgp-neighbor: the BGP speaker is off", strings.Join(bgp, ", ")))
	}
	if len(pol) > 0 {
		out = append(out, fmt.Sprintf("%s set but no --policy-addr: the SIP policy agent is off", strings.Join(pol, ", ")))
	}
	return out
}

// samePort reports whether two listen addresses of one protocol would collide: the same port
// and hosts that overlap (equal, or one a wildcard).
func samePort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// resolvePaths places the default database and JSON log in the data directory. Paths the
// operator named stay relative to the working directory, as a shell user expects.
func (c *Config) resolvePaths(fs *pflag.FlagSet) {
	// fs.Set marks a flag Changed, so Changed covers env and file values too.
	if !fs.Changed("db-file") {
		c.DBFile = filepath.Join(c.DataDir, DefaultDBFile)
	}
	if !fs.Changed("json-log-file") {
		c.JSONLogFile = filepath.Join(c.DataDir, DefaultJSONLogFile)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.OAuth2ClientSecret != "" && c.OAuth2ClientID == "" {
		errs = append(errs, errors.New("-c/--oauth2-client-secret needs -i/--oauth2-client-id as well"))
	}
	if c.OAuth2ClientID != "" && c.OAuth2ClientSecret == "" {
		errs = append(errs, errors.New("-i/--oauth2-client-id needs -c/--oauth2-client-secret as well"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-t/--tls-cert and -k/--tls-key go together: give both, or neither for a self-signed certificate"))
	}
	for _, a := range []struct{ name, addr string }{
		{"--sip-addr", c.SIPAddr}, {"-z/--sip-tls-addr", c.SIPTLSAddr}, {"--api-addr", c.APIAddr},
	} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s %q is not host:port (for example :5060 or 127.0.0.1:5060)", a.name, a.addr))
		}
	}
	if c.Store != "sqlite" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		errs = append(errs, fmt.Errorf("--store %q: use sqlite or a postgres:// URL", RedactURL(c.Store)))
	}
	if c.HomeCountry != "" && !validRegion(c.HomeCountry) {
		errs = append(errs, fmt.Errorf("--home-country %q: use a two-letter ISO 3166 code such as DE or US", c.HomeCountry))
	}
	if c.OpenDHT {
		if host, port, err := net.SplitHostPort(c.OpenDHTAddr); err != nil || port == "" || (host != "" && host != "0.0.0.0" && host != "::") {
			errs = append(errs, fmt.Errorf("--opendht-addr %q: give :PORT (OpenDHT listens on every address), for example :4222", c.OpenDHTAddr))
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("--opendht-addr %q: the port is not a number from 0 to 65535", c.OpenDHTAddr))
		}
		for _, b := range c.OpenDHTBootstrap {
			if host, port, err := net.SplitHostPort(b); err != nil || host == "" || port == "" {
				errs = append(errs, fmt.Errorf("--opendht-bootstrap %q: give host:port, for example 192.0.2.1:4222", b))
			}
		}
		if c.OpenDHTRelay && !c.P2P {
			errs = append(errs, errors.New("--opendht-relay publishes OpenDHT's events to libp2p peers: it needs -p/--p2p"))
		}
		if c.OpenDHTRate <= 0 {
			errs = append(errs, errors.New("--opendht-rate must be above 0"))
		}
		if c.OpenDHTMinSightings < 0 {
			errs = append(errs, errors.New("--opendht-min-sightings must be 0 or more"))
		}
	}
	switch c.EventCompat {
	case "", "none", "ip-port":
	default:
		errs = append(errs, fmt.Errorf("--event-compat %q: use none (the default) or ip-port", c.EventCompat))
	}
	if c.NumberMatch != "exact" && c.NumberMatch != "national" {
		errs = append(errs, fmt.Errorf("--number-match %q: use exact or national", c.NumberMatch))
	}
	if c.StoreSpoolMax < 16<<20 {
		errs = append(errs, errors.New("--store-spool-max must be at least 16777216 bytes (16 MiB)"))
	}
	if c.WebhookSpoolMax < 1<<20 {
		errs = append(errs, errors.New("--webhook-spool-max must be at least 1048576 bytes (1 MiB)"))
	}
	if c.WebhookConcurrent < 1 || c.WebhookConcurrent > 256 {
		errs = append(errs, errors.New("--webhook-concurrency must be between 1 and 256"))
	}
	if c.WebhookTimeout <= 0 {
		errs = append(errs, errors.New("--webhook-timeout must be positive, e.g. 10s"))
	}
	if c.WebhookMaxBackoff < time.Second {
		errs = append(errs, errors.New("--webhook-max-backoff must be at least 1s"))
	}
	if c.WebhookURL == "" && (c.OAuth2ClientID != "" || c.WebhookTokenURL != "" || c.WebhookSecret != "") {
		c.Notices = append(c.Notices, "webhook options (-i/-c, --webhook-token-url, --webhook-secret) are set but -w/--webhook-url is not: nothing is sent")
	}
	if c.Retention < 0 {
		errs = append(errs, errors.New("--retention cannot be negative"))
	}
	if c.CommitWait < 0 || c.CommitWait > time.Second {
		errs = append(errs, errors.New("--commit-wait must be between 0 (write at once) and 1s"))
	}
	if c.FoldWindow < 0 || c.FoldWindow > time.Minute {
		errs = append(errs, errors.New("--fold-window must be between 0 (no folding) and 1m"))
	}
	if c.P2PMinSightings < 1 {
		errs = append(errs, errors.New("--p2p-min-sightings must be at least 1"))
	}
	if c.P2PRate <= 0 {
		errs = append(errs, errors.New("--p2p-rate must be more than 0"))
	}
	if c.P2PCatchup < 0 || c.P2PCatchup > 720*time.Hour {
		errs = append(errs, errors.New("--p2p-catchup must be between 0 and 720h (peers refuse events older than 30 days)"))
	}
	if !c.P2P && (len(c.Bootstrap) > 0 || len(c.P2PTrust) > 0 || c.P2PMinSightings > 1) {
		c.Notices = append(c.Notices, "peer-to-peer options (-b, --p2p-trust, --p2p-min-sightings) are set but -p/--p2p is not: this node neither shares nor receives")
	}
	if c.Metrics && !c.API {
		c.Notices = append(c.Notices, "--metrics is set but -a/--api is not: the API listener serves /metrics, so no metrics are served")
	}
	if c.SIPMaxConns < 1 || c.SIPMaxConnsPerIP < 1 {
		errs = append(errs, errors.New("--sip-max-conns and --sip-max-conns-per-ip must be at least 1"))
	}
	if c.APIMaxConns < 1 || c.APIMaxConnsPerIP < 1 {
		errs = append(errs, errors.New("--api-max-conns and --api-max-conns-per-ip must be at least 1"))
	}
	if c.SIPReplyRate <= 0 || c.SIPReplyBurst < 1 {
		errs = append(errs, errors.New("--sip-reply-rate must be more than 0 and --sip-reply-burst at least 1"))
	}
	if c.QueueMaxBytes < 16<<20 {
		errs = append(errs, errors.New("--queue-max-bytes must be at least 16777216 (16 MiB)"))
	}
	if c.AlertWindow <= 0 || c.AlertMinCount < 1 {
		errs = append(errs, errors.New("--alert-window must be positive (e.g. 10m) and --alert-min-count at least 1"))
	}
	if c.AlertSource != "local" && c.AlertSource != "trusted" && c.AlertSource != "all" {
		errs = append(errs, fmt.Errorf("--alert-source %q: use local, trusted or all", c.AlertSource))
	}
	if c.AlertWebhookSecret != "" && c.AlertWebhook == "" {
		errs = append(errs, errors.New("--alert-webhook-secret needs --alert-webhook"))
	}
	if len(c.APIToken) > 0 && c.APITokenFile != "" {
		errs = append(errs, errors.New("give API tokens with --api-token or --api-token-file, not both"))
	}
	if c.BGPMaxPrefixes < 1 || c.BGPMinCount < 1 || c.PolicyMinCount < 1 || c.BGPMaxPerNet6 < 1 || c.BGPMaxReceived < 1 {
		errs = append(errs, errors.New("--bgp-max-prefixes, --bgp-max-per-ipv6-net, --bgp-max-received, --bgp-min-count and --policy-min-count must be at least 1"))
	}
	if c.BGPTTL < 0 || c.BGPTTL > 8784*time.Hour { // feed.MaxTTL: a year
		errs = append(errs, errors.New("--bgp-ttl must be from 0 (never withdrawn by time) to 8784h (a year)"))
	}
	switch c.PolicySource {
	case "trusted", "local", "all":
	default:
		errs = append(errs, fmt.Errorf("--policy-source %q: use trusted, local or all", c.PolicySource))
	}
	if c.PolicyTrustedHops < 1 || c.PolicyTrustedHops > 8 {
		errs = append(errs, errors.New("--policy-trusted-hops must be between 1 and 8"))
	}
	if c.PolicyAddr != "" && !c.SIPDisable && samePort(c.PolicyAddr, c.SIPAddr) {
		errs = append(errs, fmt.Errorf("--policy-addr %s and --sip-addr %s share a port: give the policy agent its own (e.g. 127.0.0.1:5070)", c.PolicyAddr, c.SIPAddr))
	}
	if c.PolicyAddr != "" && c.API && samePort(c.PolicyAddr, c.APIAddr) {
		errs = append(errs, fmt.Errorf("--policy-addr %s and --api-addr %s share a port: give the policy agent its own", c.PolicyAddr, c.APIAddr))
	}
	if c.PolicyAddr != "" {
		if _, port, err := net.SplitHostPort(c.PolicyAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--policy-addr %q is not host:port (for example 127.0.0.1:5070)", c.PolicyAddr))
		}
	}
	if c.SIPIdleTimeout <= 0 || c.SIPMessageTimeout <= 0 {
		errs = append(errs, errors.New("--sip-idle-timeout and --sip-message-timeout must be positive"))
	}
	return errors.Join(errs...)
}

// validRegion is a two-letter upper-case region code.
func validRegion(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// days is a duration that also takes whole days ("90d"), the unit retention is thought in.
type days time.Duration

func (d *days) String() string { return time.Duration(*d).String() }
func (d *days) Type() string   { return "duration" }
func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("%q: give whole days (90d) or a duration (2160h)", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: give whole days (90d) or a duration (2160h)", s)
	}
	*d = days(v)
	return nil
}

// AmbiguousURL reports whether a URL's user and password may not be where url.Parse finds
// them: a password holding an unencoded @, or an unencoded / ? or # that ends the authority
// early and leaves the rest, the real host included, in the path. Printed, such a URL shows
// its password; given to a database driver, it connects somewhere unintended. An @ in the
// query (application_name=trap@site1) is fine.
func AmbiguousURL(raw string) bool {
	_, rest, _ := strings.Cut(raw, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	path, _, _ := strings.Cut(rest[end:], "?")
	path, _, _ = strings.Cut(path, "#")
	return strings.Count(rest[:end], "@") > 1 || strings.Contains(path, "@")
}

// RedactURL hides the password of a URL (in its user part or a query parameter named
// like password) for messages; a value that does not parse as a URL is not shown at all,
// since it may hold a password.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || AmbiguousURL(raw) {
		return "(a URL not shown: it may hold a password)"
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
