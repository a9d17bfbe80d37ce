// Package api serves the REST API that PBXes and scripts ask whether an IP address or a
// dialled number is known-bad, the lists behind it, and statistics. Routes, JSON keys and
// messages follow the reference contract (SPEC.md) so existing integrations work unchanged;
// lists stream from the store so that no response is built whole in memory. It serves the
// node's Prometheus metrics at /metrics when given a handler for them, and reports each
// request's route pattern, status and duration to an observer (Config.Observe).
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/numberintel"
	"github.com/dialtrap/dialtrap/internal/ratelog"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Store is what the API reads. It is declared here, by its consumer: a backend implements it
// beside the hub's sink and the other readers (export, catch-up) it serves.
type Store interface {
	Lookups
	// Count returns how many IPs or numbers were last seen at or after since ("" for all).
	Count(ctx context.Context, l store.List, since string) (int64, error)
	// Each calls fn for the IPs or numbers selected by o, newest first (last seen, then key,
	// both descending), streaming from the store, until fn returns an error.
	Each(ctx context.Context, l store.List, o store.ListOptions, fn func(store.Aggregate) error) error
	// Top returns the most frequent values of a dimension in events from the hour of since
	// ("" for all time) on, most frequent first, at most limit of them (0 for all), and how
	// many distinct values there are.
	Top(ctx context.Context, d store.Dimension, since string, limit int) (top []store.ValueCount, distinct int64, err error)
}

// Lookups answer whether one IP address or number is known: the question a PBX asks on its
// call path (and dialtrap check, and the peer trust gate).
type Lookups interface {
	// IP and Number return the aggregate for one key; ok is false when it was never seen.
	IP(ctx context.Context, ip string) (a store.Aggregate, ok bool, err error)
	Number(ctx context.Context, number string) (a store.Aggregate, ok bool, err error)
	// MatchNumbers returns the stored numbers that match n under the national match
	// (event.NumbersMatch), n itself included when stored, newest first.
	MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error)
	// PrepareLookups readies the backend for a stream of lookups (SQLite builds Bloom filters
	// of its keys in the background); the API's Start calls it once.
	PrepareLookups()
}

// Config is what the API needs.
type Config struct {
	Addr    string // listen address of Start, e.g. 127.0.0.1:8082
	Store   Store
	Version string // X-Dialtrap-Version and /health-check
	// Token, when set, must be sent as "Authorization: Bearer <token>" on every route except
	// /health-check: a single token named "default". Tokens, when set, replaces it: named
	// tokens, some limited to the lookup routes, replaceable while serving.
	Token  string
	Tokens *Tokens
	// Hits, when set, is told of every lookup that matched (internal/hits); /hits lists
	// what it holds (404 without).
	Hits HitRecorder
	// National makes the national number match the default of /numbers/{n} and
	// /api/phone-numbers/{n} (?match=exact still asks for the exact one).
	National bool
	Log      *slog.Logger
	// Now is the clock for relative ?since= values; nil means time.Now.
	Now func() time.Time
	// Peers returns what /peers shows (the peer-to-peer node's report); nil when this node
	// does not take part (-p off).
	Peers func() any
	// BGP and Policy return what /bgp and /policy show (the blackhole speaker's and the SIP
	// policy agent's status and counters); nil when that part is off on this node.
	BGP    func(ctx context.Context) any
	Policy func() any
	// KernelDrops, when set, is how many UDP datagrams the kernel dropped before capture read
	// them since the node started; /stats shows it as udp_receive_drops.
	KernelDrops func() uint64
	// MaxConns and MaxConnsPerSource bound connections in all and from one source (an IPv4
	// address, an IPv6 /64); defaults 4096 and 64. See conns.go.
	MaxConns          int
	MaxConnsPerSource int

	// Analytics serves /stats/numbers, /stats/targets, /stats/timeline and /campaigns (nil: they answer
	// 404); NumberInfo, when set, reads a dialled number for /numbers/{n} (number_info).
	Analytics  Analytics
	NumberInfo func(n string) numberintel.Info

	// Feeds serves the blocklist routes under /feeds/ (nil: they answer 404); Guards are the
	// never-block lists they apply; FeedPoll is how often a change stream asks the store for
	// changes (default 250 ms).
	Feeds    feed.StreamSource
	Guards   feed.Guards
	FeedPoll time.Duration
	// MaxChangeStreams bounds the /feeds/stream responses open at once (an agent holds one
	// per firewall; each asks the store a few times a second); default 256.
	MaxChangeStreams int

	// Dashboard serves the web dashboard (internal/dashboard) at "/" and under /dashboard/.
	// Those paths need no token: the page and its assets hold no data, and the page must load
	// to ask the operator for the token. nil: they answer 404 like any unknown route.
	Dashboard http.Handler
	// Live streams new events at /events/live (internal/live), behind the token; nil: 404.
	Live LiveFeed
	// Metrics serves /metrics (the Prometheus text format), behind the token like every
	// route; nil (--metrics off) answers 404 as an unknown route does.
	Metrics http.Handler
	// Observe, when set, is told of every request when its handler returns: the ServeMux
	// pattern that served it ("" when it was answered before routing: a wrong method, an
	// unclean path), the status, and the time taken. Never the raw path: it is the client's.
	Observe func(pattern string, status int, d time.Duration)

	// authed is told of each request that showed the token (the server's connection guard).
	authed func(*http.Request)
	// done is closed when the server shuts down: change streams end.
	done <-chan struct{}
	// changes reads the change sequence for all change streams (the Server runs it).
	changes *feed.Watcher
}

// LiveFeed streams events to one client until it goes or done is closed (internal/live).
type LiveFeed interface {
	Serve(w http.ResponseWriter, r *http.Request, done <-chan struct{})
}

// dashboardPath reports whether p is one of the dashboard's public paths.
func dashboardPath(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/dashboard/")
}

// Contract texts.
const (
	msgInvalid       = "The request data was invalid"
	msgNotFoundRoute = "The requested resource could not be found."
	msgNoBadActor    = "No bad actor found"
	msgNoNumber      = "No phone number found"
)

// MaxHeaderBytes limits what a client may send: a lookup needs a short URL and a few headers.
const MaxHeaderBytes = 16 << 10

var (
	contentJSON = []string{"application/json"}
	anyOrigin   = []string{"*"}
	poweredBy   = []string{"dialtrap"}
	noSniff     = []string{"nosniff"}
)

type handler struct {
	version []string
	cfg     Config
	warn    *ratelog.Logger // a failing store fails every request: one line per 10 s
	streams streamSlots     // lists being streamed, per source
	// changeStreams counts the open /feeds/stream responses (Config.MaxChangeStreams).
	changeStreams atomic.Int32
	mux           *http.ServeMux
}

// Handler returns the API's handler: the routes behind the checks every request passes
// (method, path, token) and the headers every response carries.
func Handler(cfg Config) http.Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxChangeStreams <= 0 {
		cfg.MaxChangeStreams = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Tokens = cfg.tokens()
	h := &handler{cfg: cfg, mux: http.NewServeMux(),
		version: []string{cfg.Version}, warn: ratelog.New(cfg.Log, 10*time.Second),
		streams: streamSlots{n: map[netip.Prefix]int{}}}
	for _, rt := range h.routes(cfg.Dashboard) {
		h.mux.Handle(rt.Pattern, rt.handler)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
	})
	return h
}

// Route is one route of the API as docs/reference/api.md documents it.
type Route struct {
	Pattern string // the http.ServeMux pattern
	Doc     string // what it answers and which query parameters it takes
}

type route struct {
	Route
	handler http.Handler
}

// Routes lists the API's routes in the order the reference documents them, the dashboard's
// included.
func Routes() []Route {
	var out []Route
	for _, rt := range (&handler{}).routes(http.NotFoundHandler()) {
		out = append(out, rt.Route)
	}
	return out
}

// routes is the one list the mux is built from and the reference is generated from.
func (h *handler) routes(dashboard http.Handler) []route {
	rt := func(pattern, doc string, f http.HandlerFunc) route {
		return route{Route{pattern, doc}, f}
	}
	out := []route{
		rt("/health-check", "Says the node is up, with its version. The one route that never needs the token.", h.health),
		rt("/ip-addresses/{ip}", "Is this address known-bad? 200 with when it was first and last seen, how often, and by whom (this node, peers, trusted peers; `verified_count`: sightings whose source was proven); 404 when unknown; 400 when `{ip}` is no IPv4 or IPv6 address. `::ffff:a.b.c.d` is the IPv4 address.", h.ip),
		rt("/numbers/{n}", "Is this called number known-bad? As `/ip-addresses/{ip}`, and for a dial string a `number_info` object (dial-out prefix, target, country, type). `{n}` is the number as stored, escaped as one path segment: digits, `+` and digits, or a SIP user such as `service`. `?match=national` (the default with `--number-match national`; `?match=exact` overrides) also finds the same subscriber number dialled with another international or outside-line prefix; numbers of fewer than 6 digits match only exactly.", h.number),
		rt("/ip-addresses", "Every stored address, last seen first, with `ip_addresses_total`. Streamed from the store. Query: `limit`, `offset`, `since` (a date, a date and time, RFC 3339, or a duration back from now such as `24h`); `limit=0` gives the total alone.", h.list(store.IPAddresses)),
		rt("/numbers", "Every stored called number, as `/ip-addresses` (`called_numbers_total`, `called_numbers`), with the same query parameters.", h.list(store.CalledNumbers)),
		rt("/ipset", "Every stored address as plain text, one a line, last seen first (the reference product's list). `limit` (at least 1), `offset`, `since`. For a firewall use `/feeds/ip-addresses`, which leaves out unproven and never-block addresses.", h.ipset),
		rt("/ip-addresses/ipset", "The same as `/ipset`.", h.ipset),
		rt("/api/phone-numbers/{n}", "The hosted lookup service's shape of `/numbers/{n}`: a message only.", h.hostedNumber),
		rt("/api/ip-addresses/{ip}", "The hosted lookup service's shape of `/ip-addresses/{ip}`: a message only.", h.hostedIP),
		rt("/stats", "Totals of events, addresses and numbers, and the leading transports, methods and User-Agents; on a capturing node `udp_receive_drops` too. Counted per hour: `since` starts the window on its hour and is echoed; `limit` (default 10) sizes the top lists.", h.stats),
		rt("/sip-methods", "The most frequent SIP methods and their counts. `limit` (default 10), `since` (per hour, as `/stats`).", h.top(store.SIPMethods, "sip_methods", "sip_method")),
		rt("/user-agents", "The most frequent User-Agents and their counts, as `/sip-methods`.", h.top(store.UserAgents, "user_agents", "user_agent")),
		rt("/stats/tools", "Probes by scanner tool, named from the message's shape, and User-Agents that name another tool than the shape (`ua_spoofed`). `limit`, `since`. See docs/analytics.md.", h.tools),
		rt("/stats/countries", "Probes by country of origin (from the embedded IP database). `limit`, `since`.", h.top(store.Countries, "countries", "country")),
		rt("/stats/prefixes", "Dial-out prefixes scanners put before the numbers they try. `limit`, `since`.", h.top(store.Prefixes, "prefixes", "prefix")),
		rt("/stats/numbers", "The most called numbers with what is known of each. `limit` (at most 10,000), `since`.", h.numbers),
		rt("/stats/payloads", "Payloads found in messages (SQL injection, shell, format string, script) by kind and header. `limit`, `since`.", h.top(store.Payloads, "payloads", "payload")),
		rt("/stats/target-countries", "Countries the called numbers belong to: where the calls were meant to go. `limit`, `since`.", h.top(store.TargetCountries, "target_countries", "country")),
		rt("/stats/targets", "Targets behind the dial-out prefixes, newest first; `fresh` (a duration) marks those first seen within it. `limit`, `since`.", h.targets),
		rt("/stats/timeline", "Probes over time: `step` (`1m`, `5m`, `15m`, `1h` or `1d`) and `since`; a window may hold at most 10,080 steps.", h.timeline),
		rt("/campaigns", "Campaigns: runs of probes from one source with one tool, split where it went quiet. `limit` (at most 10,000), `since`.", h.campaigns),
		rt("/peers", "The peer-to-peer report: this node's peer ID and addresses, each peer with its counters, events published, received and refused by reason, events held by the trust gate. 404 when `-p` is off.", h.peers),
		rt("/bgp", "The BGP blackhole speaker: sessions, announcements, withdrawals and counters. 404 when the speaker is off.", h.bgp),
		rt("/policy", "The SIP policy agent: its addresses, decisions by outcome, drops and latency. 404 when the agent is off.", h.policy),
		rt("/feeds/ip-addresses", "The address blocklist for firewalls. `format`: `plain` (default, one a line), `ipset` (an `ipset restore -exist` script; `set4`, `set6`), `nft` (an `nft -f` script, one transaction; `table`, `set4`, `set6`), `json`, `csv`. Filters: `verified` (`only`, the default, or `any`), `source` (`trusted`, the default, `local` or `all`), `min_count`, `since`, `ttl` (a duration or seconds: only keys last seen within it, each with the time it has left). Never-block addresses are never in it.", h.feedList(store.IPAddresses)),
		rt("/feeds/numbers", "The called-number blocklist for PBXs: `format` `plain`, `json` or `csv`, the filters of `/feeds/ip-addresses`. Emergency numbers, numbers of fewer than 6 digits and `--never-block-number` are never in it.", h.feedList(store.CalledNumbers)),
		rt("/feeds/stream", "The change stream (`application/x-ndjson`), with the filters of the feeds: the current set as `add` lines, a `sync` line, then additions, `del` lines when a key's TTL runs out, `cursor` lines after each batch and a `heartbeat` every 15 s (`heartbeat`, 1s to 5m). Reconnect with `cursor` to get only what changed. At most 256 streams at once (503 with `Retry-After` beyond).", h.feedStream),
		rt("/hits", "Lookups that matched (hits), newest first: `hits_total` (recorded since the node started) and `hits`, each with `time`, `kind` (`ip` or `number`), the `value` asked, the entry `matched`, its `seen_count`, `seen_locally`, `seen_by_peers`, the asking `client`, the API `token`'s name and the `source` (`api` or `policy`). `limit` (default 100), `offset`. Kept in memory (the last 10,000), not across restarts. A `:lookup` token may not read it.", h.hits),
		rt("/metrics", "Prometheus metrics in the text format, with `--metrics` (404 without), behind the token as every route. See docs/metrics.md.", h.metrics),
		rt("/events/live", "New events as Server-Sent Events, for the dashboard; bounded per client. See docs/dashboard.md.", h.live),
	}
	if dashboard != nil {
		out = append(out,
			route{Route{"/{$}", "The web dashboard's page (no token needed; its data is asked for with the token). `--dashboard=false`: 404."}, dashboard},
			route{Route{"/dashboard/", "The dashboard's scripts, styles and map data, embedded."}, dashboard})
	}
	return out
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Observe == nil {
		h.serve(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	h.serve(sw, r)
	// A change stream or live feed lasts as long as its client stays: its duration is no
	// latency, and would swamp the histogram's top bucket.
	if r.Pattern == "/feeds/stream" || r.Pattern == "/events/live" {
		return
	}
	h.cfg.Observe(r.Pattern, sw.Status(), time.Since(start))
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	// The header values are shared, read-only slices (keys already canonical): this runs on
	// every lookup.
	hd := w.Header()
	hd["Content-Type"] = contentJSON
	hd["Access-Control-Allow-Origin"] = anyOrigin
	hd["X-Powered-By"] = poweredBy
	hd["X-Dialtrap-Version"] = h.version
	hd["X-Content-Type-Options"] = noSniff
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.warn.Error("API handler panic", "path", r.URL.Path, "panic", v)
			writeError(w, http.StatusInternalServerError, "Internal server error")
		}
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "The request method is not allowed.")
		return
	}
	// ServeMux would answer an unclean path with a redirect; no integration relies on one. The
	// escaped path is checked: a number such as "../x" travels as ..%2Fx, one clean segment.
	if p := r.URL.EscapedPath(); p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != p) {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return
	}
	if h.cfg.Tokens.Enabled() && r.URL.Path != "/health-check" && !(h.cfg.Dashboard != nil && dashboardPath(r.URL.Path)) {
		tok, ok := h.authorized(r)
		if !ok {
			if h.cfg.Observe != nil {
				_, r.Pattern = h.mux.Handler(r) // the route refused, for the latency histogram
			}
			hd.Set("WWW-Authenticate", `Bearer realm="dialtrap"`)
			writeError(w, http.StatusUnauthorized, "A valid bearer token is required.")
			return
		}
		if h.cfg.authed != nil {
			h.cfg.authed(r)
		}
		if tok.LookupOnly {
			if _, pattern := h.mux.Handler(r); !lookupRoute(pattern) {
				r.Pattern = pattern
				h.cfg.Log.Warn("API: lookup-only token refused", "token", tok.Name, "path", r.URL.Path, "client", r.RemoteAddr)
				forbidden(w, tok.Name)
				return
			}
		}
		named := r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok.Name))
		h.mux.ServeHTTP(w, named)
		r.Pattern = named.Pattern // for Observe
		return
	}
	h.mux.ServeHTTP(w, r)
}

// tokens is the token set the handler checks: Tokens, or Token as one named "default", or
// nil when the API takes none.
func (c Config) tokens() *Tokens {
	if c.Tokens != nil {
		return c.Tokens
	}
	if c.Token == "" {
		return nil
	}
	// A bare secret is taken whole, colons and all, as before named tokens.
	return NewTokens([]Token{{Name: DefaultTokenName, sum: sha256.Sum256([]byte(strings.TrimSpace(c.Token)))}})
}

// authorized finds the token the request shows (see Tokens.match).
func (h *handler) authorized(r *http.Request) (Token, bool) {
	// The scheme is case-insensitive (RFC 9110): "bearer" and "BEARER" are Bearer too.
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Token{}, false
	}
	return h.cfg.Tokens.match(strings.TrimSpace(got))
}

// live serves /events/live: new events as Server-Sent Events until the client or the
// server goes.
func (h *handler) live(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Live == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return
	}
	h.cfg.Live.Serve(w, r, h.cfg.done)
}

// metrics serves Config.Metrics, or 404 when the node serves no metrics (--metrics off).
func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Metrics == nil {
		writeError(w, http.StatusNotFound, msgNotFoundRoute)
		return
	}
	h.cfg.Metrics.ServeHTTP(w, r)
}

// statusWriter remembers the status a handler sent, for Config.Observe. Unwrap lets
// http.ResponseController reach the connection (flushes, write deadlines of streamed lists).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Status is the status sent (200 when the handler wrote nothing).
func (s *statusWriter) Status() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		Version string `json:"version"`
	}{"OK", "Hello from dialtrap!", h.cfg.Version})
}

// writeJSON writes v indented by two spaces, without HTML escaping (SIP text such as
// <sip:100@host> stays readable; the Content-Type and nosniff keep browsers from running it).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Internal server error")
		return
	}
	w.WriteHeader(status)
	w.Write(b)
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeConst(w, status, "error", msg)
}

func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeConst(w, status, "message", msg)
}

// constBodies holds the rendered {"<key>": "<msg>"} bodies: the common answer to a PBX is
// "not found", and it need not be encoded anew each time.
var constBodies sync.Map

func writeConst(w http.ResponseWriter, status int, key, msg string) {
	k := key + "\x00" + msg
	b, ok := constBodies.Load(k)
	if !ok {
		var err error
		if b, err = marshal(jsonObject{{key, msg}}); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		constBodies.Store(k, b)
	}
	w.WriteHeader(status)
	w.Write(b.([]byte))
}

// storeFailed answers a request the store could not serve.
func (h *handler) storeFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	h.warn.Error("API: store query failed", "path", r.URL.Path, "token", TokenName(r.Context()), "err", err)
	writeError(w, http.StatusInternalServerError, "Internal server error")
}

// HTTPServer returns an http.Server for the handler with the limits an internet-facing
// listener needs: header size and read timeouts against slow clients, a write timeout for
// lookups (list streams extend their own as they make progress), idle keep-alive for PBXes
// that ask on every call.
func HTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		// Malformed requests are the client's problem: keep them out of the operator's log.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// Server is the REST API's listener. Its lifecycle is New (no side effects), Start, Close;
// Close is safe after a failed Start.
type Server struct {
	cfg    Config
	hs     *http.Server
	ln     net.Listener
	guard  *connGuard
	served chan error
	done   chan struct{} // closed by Close: change streams end
	// stopWatch ends the change watcher's goroutine; watched is closed when it has.
	stopWatch context.CancelFunc
	watched   chan struct{}
	// Handlers hold a read lock while they run; Close takes the write lock, so that no
	// handler reads the store once Close has returned.
	mu     sync.RWMutex
	closed bool
}

// New returns a server for cfg; nothing listens before Start.
func New(cfg Config) *Server {
	cfg.Tokens = cfg.tokens()
	s := &Server{guard: newConnGuard(cfg.MaxConns, cfg.MaxConnsPerSource, cfg.Tokens.Enabled()), done: make(chan struct{})}
	cfg.done = s.done
	if cfg.Feeds != nil {
		cfg.changes = feed.NewWatcher(cfg.Feeds, cfg.FeedPoll)
	}
	cfg.authed = func(r *http.Request) {
		if c := connOf(r); c != nil {
			s.guard.authed(c)
		}
	}
	s.cfg = cfg
	h := Handler(cfg)
	s.hs = HTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := connOf(r); c != nil {
			s.guard.requested(c)
		}
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.closed {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusServiceUnavailable, "The node is shutting down.")
			return
		}
		h.ServeHTTP(w, r)
	}), cfg.Log)
	s.hs.ConnState = s.guard.connState
	s.hs.ConnContext = withConn
	return s
}

// Start listens on cfg.Addr, with a cap on concurrent connections, readies the store for
// lookups and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("start the REST API on %s (is another process using the port? set --api-addr): %w", s.cfg.Addr, err)
	}
	s.ln = guardedListener{ln, s.guard}
	s.cfg.Store.PrepareLookups()
	if w := s.cfg.changes; w != nil {
		var wctx context.Context
		wctx, s.stopWatch = context.WithCancel(context.Background())
		s.watched = make(chan struct{})
		go func() {
			defer close(s.watched)
			w.Run(wctx)
		}()
	}
	s.served = make(chan error, 1)
	go func() { s.served <- s.hs.Serve(s.ln) }()
	return nil
}

// Addr is the bound address (useful with port 0), or nil before Start.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting requests and lets those in flight finish until ctx ends, then cuts
// them off. When it returns no handler reads the store any more.
func (s *Server) Close(ctx context.Context) error {
	if s.served == nil {
		return nil
	}
	close(s.done)
	err := s.hs.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = s.hs.Close()
	}
	if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	s.served = nil
	if s.stopWatch != nil {
		s.stopWatch()
		<-s.watched
	}
	// Handlers of connections cut off see their request context cancelled and end soon.
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		err = errors.Join(err, errors.New("API handlers still running 5 s after shutdown"))
	}
	return err
}
