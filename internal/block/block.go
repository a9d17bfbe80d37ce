// Package block is the firewall agent (dialtrap block): it follows the change streams of one
// or more nodes (/feeds/stream) and keeps a kernel set of blocked sources in step through
// internal/firewall. Expiry is the kernel's: every element carries its timeout, so the set
// empties itself on time even while the agent is down, and the agent never deletes an
// element, so it removes nothing it did not add. It resumes each stream from the cursor it
// last applied, kept in a small state file, so a restart of the agent or of a node costs the
// changes since, not the whole set.
package block

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dialtrap/dialtrap/internal/backoff"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/fsutil"
	"github.com/dialtrap/dialtrap/internal/ratelog"
)

// Node is one node whose stream the agent follows.
type Node struct {
	URL   string // the node's API base, e.g. https://trap1.example.net:8082
	Token string // its --api-token, or ""
	// Open, when set, reads the change stream in-process instead (a node feeding its own
	// BGP speaker); URL then only names it in logs and the state.
	Open func(ctx context.Context, query url.Values) (io.ReadCloser, error)
}

// Config is what the agent needs.
type Config struct {
	Nodes []Node
	Set   firewall.Set
	// Query is passed to every stream (ttl, verified, source, min_count, since). A ttl is
	// needed for expiry: without one, elements stay until removed by hand.
	Query url.Values
	// Guard is the agent's own never-block list: whatever a node sends, these are never
	// put in the set (the defaults and this host's addresses, at least).
	Guard *feed.IPGuard
	// StateFile keeps each node's cursor and the agent's counters (JSON, written atomically).
	StateFile string
	Log       *slog.Logger
	Client    *http.Client // default: no overall timeout (streams are long), DialTimeout to connect
	// DialTimeout bounds a connection attempt to a node (default 10 s): a node behind a
	// firewall that drops the SYN must not hold the agent for the kernel's minutes.
	DialTimeout time.Duration
	Backoff     backoff.Policy
	// BatchMax is how many additions are applied in one transaction at most (default 10,000);
	// a batch is applied as soon as the node marks a consistent point (a cursor line).
	BatchMax int
	// TTL is the longest timeout an element gets, and the timeout of one a node sends
	// without (0: as the nodes send them, which may be none: permanent).
	TTL time.Duration
	// MaxElements bounds the addresses the agent keeps in the set (default 1,048,576, an
	// ipset's maxelem): a hostile node, or a flood of proven sources from one IPv6 /64,
	// cannot fill the kernel's memory. Beyond it new addresses are refused and counted.
	MaxElements int
	// Fingerprint names the agent's selection (query and never-block list): a state file
	// written under another one holds cursors of another set, and is not resumed from.
	Fingerprint string
	// CheckEvery is how often the agent checks that its sets still exist (default 10 s): a
	// firewall reload ('nft flush ruleset') removes them, and they are then made again and
	// loaded in full from every node.
	CheckEvery time.Duration
	// Name starts the agent's log lines (default "block"; "bgp" for the speaker's feed).
	Name string
}

// NodeState is what the agent knows of one node, as the state file and status show it.
type NodeState struct {
	URL        string    `json:"url"`
	Cursor     string    `json:"cursor,omitempty"`
	Connected  bool      `json:"connected"`
	LastSync   time.Time `json:"last_sync,omitzero"`    // when the agent last applied all it had read
	NodeTime   string    `json:"node_time,omitempty"`   // the node's clock in its last sync or heartbeat
	Bytes      int64     `json:"bytes_received"`        // over all connections
	LastBytes  int64     `json:"last_connection_bytes"` // over the current (or last) one
	Adds       int64     `json:"adds_received"`
	Applied    int64     `json:"elements_applied"` // added or given a later timeout
	Refused    int64     `json:"refused"`          // never-block or unparseable addresses the node sent
	FullSyncs  int64     `json:"full_syncs"`
	Reconnects int64     `json:"reconnects"`
	LastError  string    `json:"last_error,omitempty"`
}

// State is the state file.
type State struct {
	Updated     time.Time    `json:"updated"`
	PID         int          `json:"pid"`
	Fingerprint string       `json:"fingerprint,omitempty"`
	Reloads     int64        `json:"reloads"` // times the sets were found gone and made again
	Full        int64        `json:"refused_set_full"`
	Nodes       []*NodeState `json:"nodes"`
}

// Agent follows the nodes' streams.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu  sync.Mutex // guards expires, state, gen and set calls
	gen int64      // bumped when the sets were made again: every stream starts over
	// cancels end the open streams (by node) when the sets were made again.
	cancels map[int]context.CancelFunc
	// expires holds, for each address applied, when its element expires (unix seconds;
	// math.MaxInt64 for none): 24 bytes an entry, for sets of hundreds of thousands.
	expires map[[16]byte]int64
	pruned  int64       // when prune last walked it (unix seconds)
	saved   time.Time   // when the state file was last written
	later   *time.Timer // a write put off to the end of the second
	writes  int         // state file writes, for tests
	warn    *ratelog.Logger
	state   State
}

// New checks cfg and reads the state file, if there is one.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("no node to follow: give at least one --node URL")
	}
	if cfg.Set == nil {
		return nil, errors.New("no firewall set")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second, TLSHandshakeTimeout: 10 * time.Second}}
	}
	if cfg.Backoff.Min == 0 {
		cfg.Backoff = backoffPolicy(500*time.Millisecond, 30*time.Second)
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 10000
	}
	if cfg.MaxElements <= 0 {
		cfg.MaxElements = 1 << 20
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 10 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "block"
	}
	a := &Agent{cfg: cfg, log: cfg.Log, expires: map[[16]byte]int64{}, cancels: map[int]context.CancelFunc{},
		warn: ratelog.New(cfg.Log, time.Minute)}
	old, err := ReadState(cfg.StateFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, n := range cfg.Nodes {
		u, err := url.Parse(n.URL)
		if n.Open == nil && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			return nil, fmt.Errorf("--node %q: give the node's API as http(s)://host:port", n.URL)
		}
		ns := &NodeState{URL: n.URL}
		for _, o := range old.Nodes {
			if o.URL == n.URL && old.Fingerprint == cfg.Fingerprint {
				ns.Cursor, ns.Bytes, ns.FullSyncs, ns.Reconnects = o.Cursor, o.Bytes, o.FullSyncs, o.Reconnects
				ns.Adds, ns.Applied, ns.Refused, ns.LastSync, ns.NodeTime = o.Adds, o.Applied, o.Refused, o.LastSync, o.NodeTime
			}
		}
		a.state.Nodes = append(a.state.Nodes, ns)
	}
	a.state.PID, a.state.Fingerprint = os.Getpid(), cfg.Fingerprint
	a.state.Reloads = old.Reloads
	if old.Fingerprint != cfg.Fingerprint && len(old.Nodes) > 0 {
		a.log.Info(a.cfg.Name + ": the selection changed since the state file was written; every node's set is fetched whole")
	}
	return a, nil
}

// ReadState reads a state file.
func ReadState(path string) (State, error) {
	var s State
	if path == "" {
		return s, os.ErrNotExist
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("state file %s is damaged (%v): remove it, and the agent starts from the whole sets", path, err)
	}
	return s, nil
}

// Run creates the set if needed, then follows every node until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	// Sets that are not there (after a reboot, a --flush-on-exit, a firewall reload while the
	// agent was down) are made empty: the cursors of the state file then describe a set the
	// kernel no longer holds, and every node's set is fetched whole.
	if err := a.cfg.Set.Check(ctx); errors.Is(err, firewall.ErrMissing) {
		a.mu.Lock()
		for _, ns := range a.state.Nodes {
			if ns.Cursor != "" {
				a.log.Info(a.cfg.Name+": the sets are not there; every node's set is fetched whole", "err", err)
			}
			ns.Cursor = ""
		}
		clear(a.expires)
		a.mu.Unlock()
	}
	if err := a.cfg.Set.Ensure(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.watch(ctx)
	}()
	for i := range a.cfg.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.follow(ctx, i)
		}()
	}
	wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.save(true)
}

// watch checks every CheckEvery that the sets still exist, and makes them again when a
// firewall reload removed them.
func (a *Agent) watch(ctx context.Context) {
	t := time.NewTicker(a.cfg.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.cfg.Set.Check(ctx); errors.Is(err, firewall.ErrMissing) {
			a.reload(ctx, err)
		}
	}
}

// errReload ends the streams after the sets were made again: each starts over, whole.
var errReload = errors.New("the sets were made again: fetching every node's set whole")

// reload makes the sets again after they vanished, forgets what they held and every
// cursor, so that every stream reconnects and sends its whole set.
func (a *Agent) reload(ctx context.Context, cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Warn(a.cfg.Name+": the sets are gone (a firewall reload?); making them again and fetching every node's set whole", "err", cause)
	if err := a.cfg.Set.Ensure(ctx); err != nil {
		a.log.Error(a.cfg.Name+": cannot make the sets again", "err", err)
		return
	}
	clear(a.expires)
	for _, ns := range a.state.Nodes {
		ns.Cursor = ""
	}
	a.gen++
	a.state.Reloads++
	for _, cancel := range a.cancels {
		cancel()
	}
	a.save(true)
}

// Resync makes every stream start over with the node's whole set (a never-block list that
// shrank lets addresses back in; the changes since a cursor would not send them again).
func (a *Agent) Resync() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.expires)
	for _, ns := range a.state.Nodes {
		ns.Cursor = ""
	}
	a.gen++
	for _, cancel := range a.cancels {
		cancel()
	}
}

// Snapshot returns a copy of the agent's state.
func (a *Agent) Snapshot() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := State{Updated: a.state.Updated, PID: a.state.PID, Fingerprint: a.state.Fingerprint, Reloads: a.state.Reloads, Full: a.state.Full}
	for _, n := range a.state.Nodes {
		c := *n
		s.Nodes = append(s.Nodes, &c)
	}
	return s
}

// follow keeps one node's stream open, reconnecting with back-off.
func (a *Agent) follow(ctx context.Context, i int) {
	node := a.cfg.Nodes[i]
	fails := 0
	for ctx.Err() == nil {
		err := a.stream(ctx, i)
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		ns := a.state.Nodes[i]
		ns.Connected = false
		ns.Reconnects++
		if err != nil {
			ns.LastError = err.Error()
		}
		a.save(false)
		a.mu.Unlock()
		switch {
		case errors.Is(err, errReload):
			fails = 0 // not the node's fault: start over at once
		case err != nil:
			fails++
		}
		wait := a.cfg.Backoff.Delay(max(fails, 1))
		if errors.Is(err, errReload) {
			a.log.Info(a.cfg.Name+": fetching the node's whole set again", "node", node.URL)
		} else {
			// Once a minute at most: a node that is down for an hour is one line a minute.
			a.warn.Warn(a.cfg.Name+": stream from the node ended; reconnecting", "node", node.URL, "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// countingReader counts what the stream delivered.
type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// maxLine bounds one stream line: an add is under 100 bytes; a hostile node gets no more.
const maxLine = 4096

// stream reads one connection to node i until it ends.
func (a *Agent) stream(parent context.Context, i int) (err error) {
	node := a.cfg.Nodes[i]
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	a.mu.Lock()
	cursor, gen := a.state.Nodes[i].Cursor, a.gen
	a.cancels[i] = cancel
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.cancels, i)
		a.mu.Unlock()
		if ctx.Err() != nil && parent.Err() == nil {
			err = errReload // ended by reload
		}
	}()
	q := url.Values{}
	for k, v := range a.cfg.Query {
		q[k] = v
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	body, err := a.open(ctx, node, q)
	if err != nil {
		return err
	}
	defer body.Close()
	var connBytes int64
	a.mu.Lock()
	ns := a.state.Nodes[i]
	ns.Connected, ns.LastError, ns.LastBytes = true, "", 0
	a.mu.Unlock()
	a.log.Info(a.cfg.Name+": following the node", "node", node.URL, "resume", cursor != "")
	// A watchdog: without a line for 3 heartbeats' worth (45 s by default) the connection is
	// dead even if TCP has not noticed.
	idle := time.AfterFunc(time.Minute, func() { body.Close() })
	defer idle.Stop()
	sc := bufio.NewScanner(countingReader{body, &connBytes})
	sc.Buffer(make([]byte, 0, maxLine), maxLine)
	var batch []firewall.Element
	now := time.Now()
	for sc.Scan() {
		idle.Reset(time.Minute)
		var m feed.Msg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("the node sent a line that is not a stream message: %.80q", sc.Bytes())
		}
		switch m.Op {
		case feed.OpAdd:
			el, ok := a.element(m)
			if !ok {
				a.mu.Lock()
				ns.Refused++
				a.mu.Unlock()
				a.log.Debug(a.cfg.Name+": left out an address the node sent", "node", node.URL, "ip", m.IP, "timeout", m.Timeout)
				continue
			}
			batch = append(batch, el)
			if len(batch) >= a.cfg.BatchMax {
				if err := a.apply(ctx, i, gen, batch, "", &m, connBytes); err != nil {
					return err
				}
				batch = batch[:0]
			}
		case feed.OpDel:
			// The element's own timeout removes it from the kernel's set at this moment.
		case feed.OpSync, feed.OpCursor, feed.OpHeartbeat:
			if m.Op == feed.OpSync && m.Full {
				a.mu.Lock()
				ns.FullSyncs++
				a.mu.Unlock()
			}
			if err := a.apply(ctx, i, gen, batch, m.Cursor, &m, connBytes); err != nil {
				return err
			}
			batch = batch[:0]
			if m.Op == feed.OpSync {
				a.log.Info(a.cfg.Name+": in step with the node", "node", node.URL, "full", m.Full,
					"took", time.Since(now).Round(time.Millisecond), "bytes", connBytes)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	return errors.New("the node closed the stream")
}

// open starts one stream from node, over HTTP or in-process.
func (a *Agent) open(ctx context.Context, node Node, q url.Values) (io.ReadCloser, error) {
	if node.Open != nil {
		return node.Open(ctx, q)
	}
	u := strings.TrimRight(node.URL, "/") + "/feeds/stream?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if node.Token != "" {
		req.Header.Set("Authorization", "Bearer "+node.Token)
	}
	resp, err := a.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			return nil, fmt.Errorf("the node refused the token (401): set the node's --api-token with --api-token or --node-token-file")
		case http.StatusNotFound:
			return nil, fmt.Errorf("the node has no /feeds/stream (404): is it a dialtrap node with -a, of a version with feeds?")
		}
		return nil, fmt.Errorf("the node answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return resp.Body, nil
}

// element checks an add line: an address (not a protected one) and a timeout within
// feed.MaxTTL, given the agent's TTL when it has none and cut to it when longer.
func (a *Agent) element(m feed.Msg) (firewall.Element, bool) {
	ip, err := netip.ParseAddr(m.IP)
	if err != nil || ip.Zone() != "" || a.cfg.Guard.Protects(ip) || m.Timeout < 0 || m.Timeout > int64(feed.MaxTTL/time.Second) {
		return firewall.Element{}, false
	}
	timeout := time.Duration(m.Timeout) * time.Second
	if ttl := a.cfg.TTL; ttl > 0 && (timeout == 0 || timeout > ttl) {
		timeout = ttl
	}
	return firewall.Element{Addr: ip.Unmap(), Timeout: timeout}, true
}

// apply puts a batch in the set, then records the cursor: a cursor is saved only once what
// came before it is in the kernel, so a crash between the two costs a re-send, never a gap.
func (a *Agent) apply(ctx context.Context, i int, gen int64, batch []firewall.Element, cursor string, m *feed.Msg, connBytes int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		return errReload
	}
	ns := a.state.Nodes[i]
	ns.Adds += int64(len(batch))
	ns.Bytes += connBytes - ns.LastBytes
	ns.LastBytes = connBytes
	// Only what is new or lives longer than what the set holds goes to the kernel: a source
	// several nodes report costs one element, with the latest expiry of them.
	now := time.Now()
	var out []firewall.Element
	for _, el := range batch {
		exp := int64(math.MaxInt64)
		if el.Timeout > 0 {
			exp = now.Add(el.Timeout).Unix()
		}
		k := el.Addr.As16()
		old, ok := a.expires[k]
		if ok && exp <= old+1 {
			continue
		}
		if !ok && len(a.expires) >= a.cfg.MaxElements {
			if a.prune(now.Unix()); len(a.expires) >= a.cfg.MaxElements {
				a.state.Full++
				ns.Refused++
				a.warn.Warn(a.cfg.Name+": the set holds --max-elements addresses; new ones are refused until some expire",
					"max_elements", a.cfg.MaxElements, "refused_total", a.state.Full)
				continue
			}
		}
		a.expires[k] = exp
		out = append(out, el)
	}
	if len(out) > 0 {
		if err := a.cfg.Set.Add(ctx, out); err != nil {
			for _, el := range out {
				delete(a.expires, el.Addr.As16()) // unknown now: the next add applies it again
			}
			if errors.Is(err, firewall.ErrMissing) {
				a.mu.Unlock()
				a.reload(ctx, err)
				a.mu.Lock()
				return errReload
			}
			return fmt.Errorf("apply %d elements: %w", len(out), err)
		}
		ns.Applied += int64(len(out))
	}
	if cursor != "" {
		ns.Cursor = cursor
		ns.LastSync = now
		if m.Time != "" {
			ns.NodeTime = m.Time
		}
	}

	return a.save(false) // at most once a second: a node sending sync lines costs no fsyncs
}

// prune forgets elements whose timeout has passed (the kernel has dropped them), at most
// once a minute (a full table would otherwise be walked for every refused address).
func (a *Agent) prune(now int64) {
	if now-a.pruned < 60 {
		return
	}
	a.pruned = now
	for ip, exp := range a.expires {
		if exp < now {
			delete(a.expires, ip)
		}
	}
}

// save writes the state file, at most once a second unless forced.
func (a *Agent) save(force bool) error {
	now := time.Now()
	if a.cfg.StateFile == "" {
		return nil
	}
	if wait := time.Second - now.Sub(a.saved); !force && wait > 0 {
		// Written when the second is over (with a.mu held, as here).
		if a.later == nil {
			a.later = time.AfterFunc(wait, func() {
				a.mu.Lock()
				defer a.mu.Unlock()
				a.later = nil
				a.save(true)
			})
		}
		return nil
	}
	if a.later != nil {
		a.later.Stop()
		a.later = nil
	}
	a.saved = now
	a.writes++
	a.state.Updated = now
	b, err := json.MarshalIndent(a.state, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(a.cfg.StateFile, append(b, '\n'), 0o644); err != nil {
		a.log.Warn(a.cfg.Name+": cannot write the state file; a restart will fetch the whole sets again", "file", a.cfg.StateFile, "err", err)
	}
	return nil
}

func backoffPolicy(lo, hi time.Duration) backoff.Policy {
	return backoff.Policy{Min: lo, Max: hi, Jitter: true}
}
