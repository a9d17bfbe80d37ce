// Package node assembles one dialtrap node from its configuration: the store, the sinks (JSON
// log, syslog, webhook), the hub between them, peer-to-peer sharing, the REST API and the SIP
// listeners. It starts them so that nothing produces an event before everything that takes
// events is in place, closes them in the reverse order so that every queued event is written,
// and decides in one place where events learned from peers go (routes). With --metrics it
// makes the node's Prometheus registry (internal/metrics), counts this node's captures (not
// peer events) on their way to the hub, times the store's writes and hands the API /metrics.
// Its lifecycle is New (no side effects), Start, Close; Close is safe after a failed or
// partial Start.
package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/bgp"
	"github.com/dialtrap/dialtrap/internal/block"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/dashboard"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/fold"
	"github.com/dialtrap/dialtrap/internal/fsutil"
	"github.com/dialtrap/dialtrap/internal/geo"
	"github.com/dialtrap/dialtrap/internal/hits"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/live"
	"github.com/dialtrap/dialtrap/internal/metrics"
	"github.com/dialtrap/dialtrap/internal/opendht"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
	"github.com/dialtrap/dialtrap/internal/policy"
	"github.com/dialtrap/dialtrap/internal/sink/jsonlog"
	"github.com/dialtrap/dialtrap/internal/sink/syslog"
	"github.com/dialtrap/dialtrap/internal/sink/webhook"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/storespool"
)

// LockFile in the data directory is held by the node running on it.
const LockFile = "node.lock"

// LevelNotice is the level of the few lines a node prints at its default log level: the
// start-up summary. Warnings and errors say that something failed.
const LevelNotice = slog.LevelInfo + 2

// The store, as the node uses it: a sink, the API's reader and catch-up's source.
var (
	_ hub.Sink             = (*sqlite.Store)(nil)
	_ api.Store            = (*sqlite.Store)(nil)
	_ peerinfo.EventSource = (*sqlite.Store)(nil)
)

// Options are what a node needs beyond its configuration.
type Options struct {
	Version string       // app_version of events, /health-check, the webhook's User-Agent
	Log     *slog.Logger // nil discards
}

// Node is one running dialtrap node.
type Node struct {
	cfg     config.Config
	version string
	log     *slog.Logger

	webhook *webhook.Sink // validated by New, started by Start
	// hits records lookups that matched and raises alerts (-a or --policy-addr); tokens are
	// the API's, replaced by ReloadTokens.
	hits      *hits.Recorder
	notifiers []hits.Notifier
	tokens    *api.Tokens
	guards    feed.Guards // never-block lists; own addresses are added by Start

	nodeID  string
	compat  event.Compat // the JSON log's and the webhook's spelling (--event-compat)
	store   Store
	labeler *intel.Labeler // countries and number targets for the analytics
	jsonlog *jsonlog.Log
	hub     *hub.Hub
	peer    peerNetwork     // nil unless -p
	dht     *opendht.Bridge // nil unless --opendht
	api     *api.Server
	live    *live.Broadcaster // the dashboard's live feed; nil without the dashboard
	sip     *sip.Server
	bgp     *bgp.Speaker     // nil unless --bgp-neighbor or --bgp-listen
	bgpFeed *block.Agent     // keeps the speaker in step with the store
	fold    *fold.Folder     // folds identical probes before the hub (nil: --fold-window 0)
	policy  *policy.Agent    // nil unless --policy-addr
	metrics *metrics.Metrics // nil unless --metrics (and -a)
	// storeSpool keeps the store's events on disk while it is away; nil unless it can go
	// away (PostgreSQL).
	storeSpool *storespool.Sink

	// closers undo what Start did, in reverse order; each gets the time it may take.
	closers []closer
	closed  bool
}

// peerNetwork is peer-to-peer sharing as the node uses it: a sink of the hub (this node's
// events to peers) that also reports on its peers. p2p_libp2p.go makes it with libp2p;
// a binary built with -tags nop2p has none (p2p_nop2p.go).
type peerNetwork interface {
	hub.Sink
	Start(context.Context) error
	Close(context.Context) error
	Report() peerinfo.Report
	ID() string      // this node's peer ID
	Addrs() []string // multiaddrs with /p2p/<peer ID>; none before Start
}

type closer struct {
	name    string
	timeout time.Duration
	close   func(context.Context) error
}

// Addrs are the addresses a node listens on, as bound (port 0 resolved). Empty when that
// listener is off.
type Addrs struct {
	PID    int      `json:"pid,omitempty"` // in the ready file: the process that listens
	SIPUDP string   `json:"sip_udp,omitempty"`
	SIPTCP string   `json:"sip_tcp,omitempty"`
	SIPTLS string   `json:"sip_tls,omitempty"`
	API    string   `json:"api,omitempty"`
	PeerID string   `json:"peer_id,omitempty"`
	P2P    []string `json:"p2p,omitempty"` // multiaddrs with /p2p/<peer ID>
	// The SIP policy agent's listeners (--policy-addr).
	PolicyUDP string `json:"policy_udp,omitempty"`
	PolicyTCP string `json:"policy_tcp,omitempty"`
	// The OpenDHT bridge's UDP port and node id (--opendht).
	OpenDHTPort int    `json:"opendht_port,omitempty"`
	OpenDHTID   string `json:"opendht_id,omitempty"`
}

// New checks what can be checked without touching anything: it opens no file and no socket
// and starts no goroutine.
func New(cfg *config.Config, o Options) (n *Node, err error) {
	defer func() {
		if err != nil {
			err = ConfigError{err}
		}
	}()
	return newNode(cfg, o)
}

// ConfigError is an error of New: the configuration is wrong (the command line, the
// environment or the file), not the machine; the command exits with its usage status.
type ConfigError struct{ Err error }

func (e ConfigError) Error() string { return e.Err.Error() }
func (e ConfigError) Unwrap() error { return e.Err }

func newNode(cfg *config.Config, o Options) (*Node, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	n := &Node{cfg: *cfg, version: o.Version, log: o.Log}
	if err := CheckP2P(cfg); err != nil {
		return nil, err
	}
	if err := CheckOpenDHT(cfg); err != nil {
		return nil, err
	}
	var err error
	if n.compat, err = event.ParseCompat(cfg.EventCompat); err != nil {
		return nil, fmt.Errorf("--event-compat %w", err)
	}
	if n.guards.IPs, err = feed.NewIPGuard(cfg.NeverBlock, cfg.NeverBlockDefaults); err != nil {
		return nil, fmt.Errorf("--never-block: %w", err)
	}
	if n.guards.Numbers, err = feed.NewNumberGuard(cfg.NeverBlockNumber); err != nil {
		return nil, fmt.Errorf("--never-block-number: %w", err)
	}
	if len(cfg.BGPNeighbor) > 0 || cfg.BGPListen != "" {
		if n.bgp, err = NewSpeaker(cfg, n.guards.IPs, o.Log); err != nil {
			return nil, err
		}
	}
	if cfg.PolicyAddr != "" {
		if _, _, err := policy.ParseDeny(cfg.PolicyDeny); err != nil {
			return nil, fmt.Errorf("--policy-deny: %w", err)
		}
		if _, err := parsePrefixes(cfg.PolicyAllow); err != nil {
			return nil, fmt.Errorf("--policy-allow: %w", err)
		}
	}
	if cfg.WebhookURL != "" {
		wh, err := webhook.New(webhook.Config{
			URL: cfg.WebhookURL, UserAgent: event.AppName + "/" + o.Version,
			ClientID: cfg.OAuth2ClientID, ClientSecret: cfg.OAuth2ClientSecret,
			TokenURL: cfg.WebhookTokenURL, Audience: cfg.WebhookAudience,
			Secret: cfg.WebhookSecret, Compat: n.compat,
			SpoolDir: filepath.Join(cfg.DataDir, "webhook-spool"), SpoolMax: cfg.WebhookSpoolMax,
			Concurrency: cfg.WebhookConcurrent, Timeout: cfg.WebhookTimeout, MaxBackoff: cfg.WebhookMaxBackoff,
			Log: o.Log,
		})
		if err != nil {
			return nil, err
		}
		n.webhook = wh
	}
	return n, nil
}

// newSpeaker checks the --bgp-* options and makes the speaker (not started).
func NewSpeaker(cfg *config.Config, guard *feed.IPGuard, log *slog.Logger) (*bgp.Speaker, error) {
	bc := bgp.Config{ASN: cfg.BGPASN, Listen: cfg.BGPListen, MaxPrefixes: cfg.BGPMaxPrefixes, MaxPerIPv6Net: cfg.BGPMaxPerNet6,
		MaxReceived: cfg.BGPMaxReceived, Guard: guard, Log: log}
	if cfg.BGPRouterID != "" {
		var err error
		if bc.RouterID, err = netip.ParseAddr(cfg.BGPRouterID); err != nil {
			return nil, fmt.Errorf("--bgp-router-id %q: give an IPv4 address", cfg.BGPRouterID)
		}
	}
	for _, s := range cfg.BGPNeighbor {
		nb, err := bgp.ParseNeighbor(s)
		if err != nil {
			return nil, err
		}
		bc.Neighbors = append(bc.Neighbors, nb)
	}
	var err error
	if bc.NextHop4, bc.NextHop6, err = bgp.ParseNextHops(cfg.BGPNextHop); err != nil {
		return nil, err
	}
	for _, c := range cfg.BGPCommunity {
		v, err := bgp.ParseCommunity(c)
		if err != nil {
			return nil, fmt.Errorf("--bgp-community: %w", err)
		}
		bc.Communities = append(bc.Communities, v)
	}
	if _, err := feed.ParseQuery(store.IPAddresses, BGPQuery(cfg), time.Now()); err != nil {
		return nil, fmt.Errorf("--bgp-verified, --bgp-source or --bgp-min-count: %w", err)
	}
	return bgp.New(bc)
}

// bgpQuery selects what the speaker announces, as a feed query.
func BGPQuery(cfg *config.Config) url.Values {
	return url.Values{"ttl": {cfg.BGPTTL.String()}, "verified": {cfg.BGPVerified}, "source": {cfg.BGPSource},
		"min_count": {strconv.Itoa(cfg.BGPMinCount)}}
}

// localStream serves the store's change stream in-process, for the node's own speaker.
func (n *Node) localStream(ctx context.Context, q url.Values) (io.ReadCloser, error) {
	fq, err := feed.ParseQuery(store.IPAddresses, q, time.Now())
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		err := feed.Serve(ctx, bw, n.store, feed.StreamOptions{Query: fq, Cursor: q.Get("cursor"), Guards: n.guards, Flush: bw.Flush})
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// startBGP starts the speaker and the agent that feeds it from the store.
func (n *Node) startBGP(ctx context.Context) error {
	if err := n.bgp.Start(ctx); err != nil {
		return err
	}
	n.onClose("bgp", 5*time.Second, func(context.Context) error { return n.bgp.Close() })
	agent, err := block.New(block.Config{
		Nodes: []block.Node{{URL: "local", Open: n.localStream}},
		Set:   n.bgp, Query: BGPQuery(&n.cfg), Guard: n.guards.IPs, Log: n.log,
		TTL: n.cfg.BGPTTL, Fingerprint: "bgp", Name: "bgp", // the speaker holds the cap (--bgp-max-prefixes) and its waiting list
	})
	if err != nil {
		return err
	}
	n.bgpFeed = agent
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := agent.Run(actx); err != nil && actx.Err() == nil {
			n.log.Error("bgp: the speaker no longer follows the store", "err", err)
		}
	}()
	n.onClose("bgp feed", 5*time.Second, func(ctx context.Context) error {
		cancel()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	return nil
}

// startHits opens the alert notifiers and starts the hit recorder.
func (n *Node) startHits() error {
	cfg := &n.cfg
	ns, err := hits.OpenNotifiers(hits.NotifyConfig{DataDir: cfg.DataDir, UserAgent: event.AppName + "/" + n.version,
		WebhookURL: cfg.AlertWebhook, WebhookSecret: cfg.AlertWebhookSecret, SlackURL: cfg.AlertSlack,
		Syslog: cfg.AlertSyslog, SyslogAddr: cfg.SyslogAddr, Log: n.log})
	if err != nil {
		return err
	}
	n.notifiers = ns
	n.hits = hits.New(hits.Config{Notifiers: ns, Log: n.log,
		Rules: hits.Rules{Window: cfg.AlertWindow, MinCount: int64(cfg.AlertMinCount), Source: cfg.AlertSource}})
	n.hits.Start()
	// Closed after the API and the policy agent (closers run last first): no hit is lost.
	n.onClose("hit alerts", 10*time.Second, func(ctx context.Context) error {
		n.hits.Close()
		return hits.CloseNotifiers(ctx, n.notifiers)
	})
	return nil
}

// readTokens reads the API tokens from --api-token-file or --api-token; nil: none.
func (n *Node) readTokens() ([]api.Token, error) {
	if n.cfg.APITokenFile != "" {
		ts, err := api.ReadTokenFile(n.cfg.APITokenFile)
		if err == nil && len(ts) == 0 {
			// An empty file must not mean an open API: the operator meant to require tokens.
			err = fmt.Errorf("--api-token-file %s holds no token: add NAME:SECRET lines (or leave the option out for an API without tokens)", n.cfg.APITokenFile)
		}
		return ts, err
	}
	if len(n.cfg.APIToken) == 0 {
		return nil, nil
	}
	ts, err := api.ParseTokens(n.cfg.APIToken)
	if err != nil {
		return nil, fmt.Errorf("--api-token: %w", err)
	}
	return ts, nil
}

// ReloadTokens re-reads --api-token-file (SIGHUP): tokens removed from it are refused from
// now on, the others keep working. On an error the old tokens stay in force.
func (n *Node) ReloadTokens() error {
	if n.tokens == nil || n.cfg.APITokenFile == "" { // no API, or tokens given on the command line
		return nil
	}
	ts, err := api.ReadTokenFile(n.cfg.APITokenFile)
	if err != nil {
		return fmt.Errorf("%w (the old tokens stay in force)", err)
	}
	n.tokens.Set(ts)
	n.log.Info("API tokens reloaded", "tokens", n.tokens.Names())
	return nil
}

// startPolicy starts the SIP policy agent on the store's lookups.
func (n *Node) startPolicy(ctx context.Context) error {
	cfg := &n.cfg
	code, uri, _ := policy.ParseDeny(cfg.PolicyDeny) // checked by New
	allow, _ := parsePrefixes(cfg.PolicyAllow)       // checked by New
	a, err := policy.New(policy.Config{
		Addr: cfg.PolicyAddr, Lookups: n.store, National: cfg.NumberMatch == "national",
		MinCount: int64(cfg.PolicyMinCount), VerifiedOnly: cfg.PolicyVerifiedOnly, Source: policySource(cfg.PolicySource),
		IPGuard: n.guards.IPs, NumberGuard: n.guards.Numbers, Deny: code, DenyURI: uri,
		CallerHeader: cfg.PolicyCallerHeader, FailClosed: cfg.PolicyFailClosed, TrustedHops: cfg.PolicyTrustedHops,
		Allow: allow, Log: n.log, Hit: n.hits.Record,
	})
	if err != nil {
		return err
	}
	n.store.PrepareLookups() // the Bloom filters answer most misses without SQLite
	if err := a.Start(ctx); err != nil {
		return err
	}
	n.policy = a
	n.onClose("policy agent", 5*time.Second, a.Close)
	if len(allow) == 0 && !isLoopback(a.TCPAddr().String()) {
		n.log.Warn("the SIP policy agent listens beyond loopback without --policy-allow: anyone who can reach it can ask, and have its answers sent to an address they forge",
			"addr", cfg.PolicyAddr)
	}
	return nil
}

// policySource reads --policy-source (checked by config).
func policySource(s string) store.Source {
	switch s {
	case "local":
		return store.SourceLocal
	case "all":
		return store.SourceAll
	}
	return store.SourceTrusted
}

// parsePrefixes reads addresses and CIDR prefixes, as the never-block list does.
func parsePrefixes(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		p, ok := feed.ParsePrefix(strings.TrimSpace(e))
		if !ok {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", e)
		}
		out = append(out, p)
	}
	return out, nil
}

// ReloadNeverBlock reads the never-block lists again (their files may have changed) and
// applies them at once: the speaker withdraws what they now protect, and feeds, shares and
// the policy agent use the new lists from the next request on.
func (n *Node) ReloadNeverBlock() error {
	g, err := feed.NewIPGuard(n.cfg.NeverBlock, n.cfg.NeverBlockDefaults)
	if err != nil {
		return fmt.Errorf("--never-block: %w (the old list stays in force)", err)
	}
	if n.cfg.NeverBlockDefaults {
		if err := g.AddHostAddrs(); err != nil {
			n.log.Warn(err.Error())
		}
	}
	n.guards.IPs.Replace(g)
	if n.bgp != nil {
		err := n.bgp.Reguard()
		n.bgpFeed.Resync() // what the list no longer protects is announced again
		return err
	}
	return nil
}

// Shareable decides which events go to peers, published or served to catch-up: never a
// never-block address, and of this node's own events only sources that proved themselves
// (TCP, TLS, a UDP echo) unless --p2p-share-unverified: one forged datagram must not put an
// innocent address on every node's list. (Peer events are served as their signer sent them.)
func Shareable(cfg *config.Config, g feed.Guards) func(*event.Event) bool {
	all := cfg.P2PShareUnverified
	return func(e *event.Event) bool {
		return (all || e.SourceVerified || e.FromPeer) && !g.IPs.ProtectsString(e.SourceIP)
	}
}

// Routes is the one decision on peer events: for each sink (by name), whether events learned
// from peers reach it. The store keeps them (with where they came
// from); the JSON log and syslog write them only when the operator asks (a remote node must
// never cause a local Fail2Ban ban, and a log pipeline must not count another node's
// sightings as local); the webhook sends them only with --webhook-peer-events; and they are
// never published to peers again, whatever the options.
func Routes(cfg *config.Config) map[string]bool {
	return map[string]bool{
		"sqlite":  true,
		"jsonlog": cfg.JSONLogPeerEvents,
		"syslog":  cfg.SyslogPeerEvents,
		"webhook": cfg.WebhookPeerEvents,
		// Never published again, but for OpenDHT's with --opendht-relay (the p2p sink's
		// Accept lets those through and no other peer event).
		"p2p": cfg.OpenDHTRelay,
	}
}

// Start opens the store and the sinks, starts the hub, joins the peer-to-peer network, and
// starts the API and the SIP listeners, in that order: nothing publishes an event before
// every sink is attached. On error, what was started is closed again.
func (n *Node) Start(ctx context.Context) (err error) {
	if n.hub != nil || n.closed {
		return errors.New("node: Start called twice, or after Close")
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if cerr := n.Close(cctx); cerr != nil {
				n.log.Debug("closing after a failed start", "err", cerr)
			}
		}
	}()
	cfg := &n.cfg
	if cfg.ReadyFile != "" {
		removeStaleReadyFile(cfg.ReadyFile)
	}
	if err := writable(cfg.DataDir); err != nil {
		return err
	}
	// One node per data directory: two would race to make the node id, the keys and the
	// certificate, and share one database and spool without knowing it.
	lock, pid, err := fsutil.Lock(filepath.Join(cfg.DataDir, LockFile))
	if errors.Is(err, fsutil.ErrLocked) {
		holder := "" // unknown in the instant between its lock and its writing its pid
		if pid > 0 {
			holder = fmt.Sprintf(" (pid %d)", pid)
		}
		return fmt.Errorf("data directory %s is in use by another dialtrap node%s: give each node its own --data-dir", cfg.DataDir, holder)
	}
	if err != nil {
		return fmt.Errorf("lock data directory %s: %w", cfg.DataDir, err)
	}
	n.onClose("data directory lock", time.Second, func(context.Context) error { return lock.Close() })
	if n.nodeID, err = event.LoadNodeID(cfg.DataDir); err != nil {
		return err
	}
	if cfg.NeverBlockDefaults {
		if err := n.guards.IPs.AddHostAddrs(); err != nil {
			n.log.Warn(err.Error())
		}
	}
	routes := Routes(cfg)
	n.hub = hub.New(n.log)
	// The memory budget of the queues: half for the store (it has back-pressure and the
	// deepest queue), an eighth for each other output.
	storeBytes, sinkBytes := int(cfg.QueueMaxBytes/2), int(cfg.QueueMaxBytes/8)

	if n.store, err = n.openStore(ctx); err != nil {
		return err
	}
	n.labeler = intel.NewLabeler(cfg.HomeCountry)
	n.store.SetLabeler(n.labeler)
	n.onClose("store", 15*time.Second, func(context.Context) error { return n.store.Close() })
	if cfg.Retention > 0 {
		n.startRetention() // stops before the store closes
	}
	var storeSink hub.Sink = n.store
	if cfg.Metrics && cfg.API { // the API serves them
		n.metrics = metrics.New(n.version)
		storeSink = n.metrics.TimeSink(n.store)
	}
	if storeSink, err = n.spoolStore(ctx, storeSink); err != nil {
		return err
	}
	// The store gets the deepest queue and back-pressure: capture must not lose what it can
	// keep. Queues are bounded in events and in bytes (--queue-max-bytes).
	// A transaction of at most 8 MiB of events keeps the WAL small between checkpoints.
	n.hub.Add(storeSink, hub.Options{Capacity: 1 << 15, MaxBytes: storeBytes, MaxBatch: 5000, MaxBatchBytes: 8 << 20,
		Policy: hub.Block, PeerEvents: routes["sqlite"], Linger: cfg.CommitWait})

	if cfg.JSONLog {
		if n.jsonlog, err = jsonlog.Open(cfg.JSONLogFile, n.compat); err != nil {
			return err
		}
		n.onClose("jsonlog", 5*time.Second, func(context.Context) error { return n.jsonlog.Close() })
		n.hub.Add(n.jsonlog, hub.Options{Capacity: 1 << 14, MaxBytes: sinkBytes, MaxBatch: 1000, PeerEvents: routes["jsonlog"],
			Linger: cfg.CommitWait})
	}
	if cfg.Syslog {
		sl, err := syslog.Open(cfg.SyslogAddr)
		if err != nil {
			return err
		}
		n.onClose("syslog", 5*time.Second, func(context.Context) error { return sl.Close() })
		n.hub.Add(sl, hub.Options{Capacity: 1 << 14, MaxBytes: sinkBytes, MaxBatch: 500, PeerEvents: routes["syslog"]})
	}
	if n.webhook != nil {
		if err := n.webhook.Start(ctx); err != nil {
			return err
		}
		n.onClose("webhook", 5*time.Second, n.webhook.Close) // after the hub has drained into the spool
		// The spool takes batches as fast as the disk does; the endpoint's pace never reaches
		// this queue. Its bytes bound it (an eighth of --queue-max-bytes, about 50,000
		// events by default), not a count: at a flood's 80,000 events/s a count of 16,384
		// was 0.2 s of slack, and a busy CI machine's disk dropped 0.4% of a flood.
		n.hub.Add(n.webhook, hub.Options{Capacity: 1 << 17, MaxBytes: sinkBytes, MaxBatch: 1000, PeerEvents: routes["webhook"]})
		if u, err := url.Parse(cfg.WebhookURL); err == nil && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			n.log.Warn("the webhook URL is plain http: events, signatures and any OAuth2 token cross the network unencrypted; use https", "url", webhook.LogURL(cfg.WebhookURL))
		}
	}
	if cfg.P2P {
		if n.peer, err = n.newPeerNetwork(); err != nil {
			return err
		}
		n.onClose("p2p", 5*time.Second, n.peer.Close) // after the hub has published this node's queued events
		n.hub.Add(n.peer, hub.Options{Capacity: 1 << 14, MaxBytes: sinkBytes, MaxBatch: 500, PeerEvents: routes["p2p"],
			Accept: relayable(cfg, Shareable(cfg, n.guards))})
	}
	if cfg.OpenDHT {
		if err := n.openDHT(sinkBytes); err != nil {
			return err
		}
	}
	if cfg.API && cfg.Dashboard {
		// The dashboard's live feed: a browser gets this node's own probes only (as the JSON
		// log does), so what it shows is what this node saw. Its queue is small: the feed is
		// a view, and a browser that lags is better served fresh events than old ones.
		n.live = live.New(live.Options{Country: geo.CountryOf})
		n.hub.Add(n.live, hub.Options{Capacity: 1 << 12, MaxBytes: 8 << 20, MaxBatch: 256, Accept: n.live.Watching})
	}
	// Every sink is attached: from here on events may flow.
	if err := n.hub.Start(ctx); err != nil {
		return err
	}
	n.onClose("hub", 30*time.Second, func(ctx context.Context) error {
		err := n.hub.Close(ctx)
		for _, s := range n.hub.Stats() {
			n.log.Info("sink totals", "sink", s.Name, "delivered", s.Delivered, "dropped", s.Dropped, "refused", s.Refused, "failures", s.Failures)
		}
		return err
	})
	if n.peer != nil {
		if err := n.peer.Start(ctx); err != nil {
			return err
		}
	}
	if n.dht != nil {
		n.dht.Start() // listens once every sink is attached and the hub runs
	}
	if !cfg.SIPDisable {
		scfg := sip.Config{
			Addr: cfg.SIPAddr, Responsive: cfg.SIPResponsive, Persona: cfg.Persona,
			NodeID: n.nodeID, AppVersion: n.version,
			MaxConns: cfg.SIPMaxConns, MaxConnsPerIP: cfg.SIPMaxConnsPerIP,
			IdleTimeout: cfg.SIPIdleTimeout, MessageTimeout: cfg.SIPMessageTimeout,
			ReadBuffer: cfg.SIPReadBuffer, ReplyRate: cfg.SIPReplyRate, ReplyBurst: cfg.SIPReplyBurst,
			Log: n.log, Publish: n.hub.Publish,
		}
		if cfg.Enrich {
			scfg.Enrich = intel.Enrich
		}
		publish := n.hub.Publish
		if m := n.metrics; m != nil {
			// Only this node's captures are probes: peer events reach the hub through the
			// peer network (newPeerNetwork), not here. A folded event counts the probes it
			// stands for.
			publish = func(e *event.Event) {
				m.Probe(e)
				n.hub.Publish(e)
			}
		}
		scfg.Publish = publish
		if cfg.FoldWindow > 0 {
			// Probes alike within the window become one event (internal/fold): capture asks
			// the folder before it makes an event of a probe.
			n.fold = fold.New(fold.Config{Window: cfg.FoldWindow, Publish: publish, Busy: n.hub.Busy})
			scfg.Fold = n.fold
			// Closed after capture (closers run last first, and capture's is added below)
			// and before the hub: the folded events it holds reach the hub before it drains.
			n.onClose("fold", 5*time.Second, func(context.Context) error {
				n.fold.Close()
				st := n.fold.Stats()
				n.log.Info("folding totals", "probes", st.Probes, "folded", st.Folded, "folded_events", st.Emitted,
					"held_under_pressure", st.Held, "unfolded_at_limit", st.Unfolded)
				return nil
			})
		}
		if cfg.SIPTLS {
			if scfg.TLSConfig, err = sip.TLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.DataDir, n.log); err != nil {
				return err
			}
			scfg.TLSAddr = cfg.SIPTLSAddr
		}
		n.sip = sip.New(scfg) // started last, once the API serves
	}
	if n.bgp != nil {
		if err := n.startBGP(ctx); err != nil {
			return err
		}
	}
	if cfg.API || cfg.PolicyAddr != "" {
		if err := n.startHits(); err != nil {
			return err
		}
	}
	if cfg.PolicyAddr != "" {
		if err := n.startPolicy(ctx); err != nil {
			return err
		}
	}
	if cfg.API {
		tokens, err := n.readTokens()
		if err != nil {
			return err
		}
		if tokens != nil {
			n.tokens = api.NewTokens(tokens)
		}
		acfg := api.Config{
			Addr: cfg.APIAddr, Store: n.store, Version: n.version, Tokens: n.tokens, Hits: n.hits,
			National: cfg.NumberMatch == "national", Log: n.log,
			MaxConns: cfg.APIMaxConns, MaxConnsPerSource: cfg.APIMaxConnsPerIP,
			Feeds: n.store, Guards: n.guards,
			Analytics: n.store, NumberInfo: n.labeler.Lookup,
		}
		if n.peer != nil || n.dht != nil {
			acfg.Peers = func() any { return n.peersReport() }
		}
		if n.bgp != nil {
			acfg.BGP = func(ctx context.Context) any { return n.bgpStatus(ctx) }
		}
		if n.policy != nil {
			acfg.Policy = func() any { return n.policy.Status() }
		}
		if n.sip != nil {
			acfg.KernelDrops = n.sip.KernelDrops
		}
		if n.live != nil {
			acfg.Dashboard, acfg.Live = dashboard.New(), n.live
			// Open streams end with the API; the broadcaster refuses new ones from then on.
			n.onClose("live feed", time.Second, func(context.Context) error { n.live.Close(); return nil })
		}
		if n.metrics != nil {
			n.metrics.Watch(n.metricSources())
			acfg.Metrics, acfg.Observe = n.metrics.Handler(), n.metrics.ObserveAPI
		}
		n.api = api.New(acfg)
		if err := n.api.Start(ctx); err != nil {
			return err
		}
		n.onClose("api", 5*time.Second, n.api.Close) // before the store closes: no request reads a closed store
		if n.tokens == nil && !isLoopback(n.api.Addr().String()) {
			n.log.Warn("the REST API listens beyond loopback without --api-token: anyone who can reach it can read the collected data", "addr", n.api.Addr())
		}
	}
	if n.sip != nil {
		// Closed first: no new events once shutdown starts. Its readers may be waiting for room
		// in the store's queue (back-pressure), which drains meanwhile: give them time.
		n.onClose("sip", 30*time.Second, func(ctx context.Context) error {
			err := n.sip.Close(ctx)
			n.log.Info("SIP capture totals", "messages", n.sip.Received(), "udp_kernel_drops", n.sip.KernelDrops(),
				"replies_over_budget", n.sip.RepliesSuppressed())
			if d := n.sip.KernelDrops(); d > 0 {
				n.log.Warn("the kernel dropped UDP datagrams during this run before capture read them: raise --sip-read-buffer and net.core.rmem_max",
					"dropped", d, "captured", n.sip.Received())
			}
			return err
		})
		if err := n.sip.Start(ctx); err != nil {
			return err
		}
	}
	if cfg.ReadyFile != "" {
		if err := n.writeReadyFile(); err != nil {
			return err
		}
		// The addresses are about to stop answering when the node closes.
		n.onClose("ready file", time.Second, func(context.Context) error { return os.Remove(cfg.ReadyFile) })
	}
	n.log.Log(ctx, LevelNotice, "dialtrap running", n.summary()...)
	return nil
}

func (n *Node) onClose(name string, timeout time.Duration, f func(context.Context) error) {
	n.closers = append(n.closers, closer{name, timeout, f})
}

// Addrs returns the bound addresses of what is running.
func (n *Node) Addrs() Addrs {
	var a Addrs
	str := func(x net.Addr) string {
		if x == nil {
			return ""
		}
		return x.String()
	}
	if n.sip != nil {
		a.SIPUDP, a.SIPTCP, a.SIPTLS = str(n.sip.UDPAddr()), str(n.sip.TCPAddr()), str(n.sip.TLSAddr())
	}
	if n.api != nil {
		a.API = str(n.api.Addr())
	}
	if n.policy != nil {
		a.PolicyUDP, a.PolicyTCP = str(n.policy.UDPAddr()), str(n.policy.TCPAddr())
	}
	if n.peer != nil {
		if addrs := n.peer.Addrs(); len(addrs) > 0 {
			a.PeerID, a.P2P = n.peer.ID(), addrs
		}
	}
	if n.dht != nil {
		r := n.dht.Report()
		a.OpenDHTPort, a.OpenDHTID = r.Port, r.NodeID
	}
	return a
}

// metricSources are the counters /metrics reads at scrape time from the parts that keep
// them: the hub's per sink, the SIP server's, the peer node's report, the webhook's spool.
func (n *Node) metricSources() metrics.Sources {
	s := metrics.Sources{Sinks: n.hub.Stats}
	if n.storeSpool != nil {
		s.StoreSpool = n.storeSpoolMetrics
	}
	if n.sip != nil {
		s.KernelDrops, s.RepliesOverBudget = n.sip.KernelDrops, n.sip.RepliesSuppressed
	}
	if n.peer != nil {
		s.Peers = func() metrics.Peers {
			r := n.peer.Report()
			return metrics.Peers{Connected: r.PeersTotal, Published: r.Published, Received: r.Received,
				Rejected: r.Rejected, Dropped: r.Dropped, Pending: r.Pending, PendingDropped: r.PendingDropped}
		}
	}
	if n.fold != nil {
		s.Fold = n.fold.Stats
	}
	if n.hits != nil {
		s.Hits = func() metrics.Hits {
			st := n.hits.Stats()
			h := metrics.Hits{Hits: st.Hits, Dropped: st.Dropped, Alerts: st.Alerts}
			for _, ns := range st.Notifiers {
				h.Notifiers = append(h.Notifiers, metrics.HitNotifier{Name: ns.Name, Sent: ns.Sent, Failed: ns.Failed})
			}
			return h
		}
	}
	if n.webhook != nil {
		s.Webhook = func() metrics.Webhook {
			st := n.webhook.Stats()
			return metrics.Webhook{SpoolEvents: st.Pending, SpoolBytes: st.SpoolBytes, Delivered: st.Delivered,
				Rejected: st.Rejected, Failures: st.Failures, Dropped: st.Dropped}
		}
	}
	return s
}

// BGPStatus is what /bgp shows: the speaker and the stream that feeds it.
type BGPStatus struct {
	bgp.Status
	Feed *block.NodeState `json:"feed,omitempty"`
}

func (n *Node) bgpStatus(ctx context.Context) BGPStatus {
	st := BGPStatus{Status: n.bgp.Status(ctx)}
	if n.bgpFeed != nil {
		if s := n.bgpFeed.Snapshot(); len(s.Nodes) == 1 {
			st.Feed = s.Nodes[0]
		}
	}
	return st
}

// NodeID is created_by_node_id of this node's events (known after Start).
func (n *Node) NodeID() string { return n.nodeID }

// Reopen reopens the JSON log, for log rotation (SIGHUP).
func (n *Node) Reopen() error {
	if n.jsonlog == nil {
		return nil
	}
	return n.jsonlog.Reopen()
}

// Close stops the SIP listeners and the API first (no new events, no reads of a closing
// store), drains every queue into its sink, leaves the peer network, and closes the sinks
// and the store. Each step gets its own time limit within ctx. It is safe after a failed or
// partial Start, and more than once.
func (n *Node) Close(ctx context.Context) error {
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		c := n.closers[i]
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		if err := c.close(cctx); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
		}
		cancel()
	}
	n.closers = nil
	return errors.Join(errs...)
}

// writeReadyFile writes the bound addresses atomically: a reader sees the whole file or none.
func (n *Node) writeReadyFile() error {
	a := n.Addrs()
	a.PID = os.Getpid()
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(n.cfg.ReadyFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write --ready-file %s: %w", n.cfg.ReadyFile, err)
	}
	return nil
}

// removeStaleReadyFile removes a ready file a killed node left behind (its pid is gone), so
// that nothing reads dead addresses while this node starts. The file of a node still running
// is left alone.
func removeStaleReadyFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var a Addrs
	if json.Unmarshal(b, &a) == nil && a.PID > 0 && a.PID != os.Getpid() && syscall.Kill(a.PID, 0) != syscall.ESRCH {
		return
	}
	os.Remove(path)
}

// summary is the one line a node prints at start: what it is, where it listens, where it
// keeps its data.
func (n *Node) summary() []any {
	a := n.Addrs()
	attrs := []any{"version", n.version, "node_id", n.nodeID, "data_dir", n.cfg.DataDir, "db", n.storeName()}
	if n.sip == nil {
		attrs = append(attrs, "sip", "disabled (-R): this node records nothing by itself")
	} else {
		attrs = append(attrs, "sip_udp", a.SIPUDP, "sip_tcp", a.SIPTCP)
		if a.SIPTLS != "" {
			attrs = append(attrs, "sip_tls", a.SIPTLS)
		}
		mode := event.Passive
		if n.cfg.SIPResponsive {
			mode = event.Responsive
		}
		attrs = append(attrs, "mode", mode)
	}
	if a.API != "" {
		attrs = append(attrs, "api", a.API)
	}
	if n.peer != nil {
		attrs = append(attrs, "peer_id", a.PeerID, "p2p", a.P2P, "bootstrap", len(n.cfg.Bootstrap),
			"trusted", len(n.cfg.P2PTrust), "min_sightings", n.cfg.P2PMinSightings)
	}
	if n.jsonlog != nil {
		attrs = append(attrs, "json_log", n.cfg.JSONLogFile)
	}
	if n.cfg.Syslog {
		where := n.cfg.SyslogAddr
		if where == "" {
			where = "local"
		}
		attrs = append(attrs, "syslog", where)
	}
	if n.webhook != nil {
		attrs = append(attrs, "webhook", webhook.LogURL(n.cfg.WebhookURL))
	}
	if n.bgp != nil {
		attrs = append(attrs, "bgp_neighbors", len(n.cfg.BGPNeighbor), "bgp_max_prefixes", n.cfg.BGPMaxPrefixes)
	}
	if n.policy != nil {
		attrs = append(attrs, "policy_udp", a.PolicyUDP, "policy_tcp", a.PolicyTCP, "policy_deny", n.cfg.PolicyDeny)
	}
	return attrs
}

// writable makes the data directory if needed and checks that the node can write there,
// so that a read-only one is named as such before any file in it is opened.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create data directory %s: %w (choose another with --data-dir)", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable: %w (fix its permissions, or choose another with --data-dir)", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// isLoopback reports whether a listen address only accepts local connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
