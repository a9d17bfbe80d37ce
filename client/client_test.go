package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/client"
	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/hits"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

const token = "s3cret"

// node is an in-process dialtrap API over a real SQLite store.
type node struct {
	st  *sqlite.Store
	url string
}

func mk(i int, at, ip, number string, verified bool) *event.Event {
	return &event.Event{
		AppName: event.AppName, AppVersion: "test", Timestamp: at,
		UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "node",
		CollectedMethod: event.Passive, Transport: event.UDP, SourceIP: ip, SourcePort: 5060,
		DestinationIP: "127.0.0.1", DestinationPort: 5060, CalledNumber: number,
		SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:x SIP/2.0\r\n\r\n",
		SourceVerified: verified,
	}
}

// startNode seeds a store with a small attack history and serves the API over it, wrapped
// in wrap when given (to make it fail or stall).
func startNode(t testing.TB, wrap func(http.Handler) http.Handler, peers func() any, rec ...*hits.Recorder) *node {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sdk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	recent := event.FormatTime(time.Now().Add(-time.Minute))
	batch := []*event.Event{
		mk(1, "2026-11-22 09:15:00.000000001", "192.0.2.10", "+46812345678", false),
		mk(2, "2026-11-23 10:00:00.500000000", "192.0.2.10", "+46812345678", false),
		mk(3, "2026-11-23 10:30:00.000000000", "2001:db8::5", "0046812345678", false),
		mk(4, "2026-11-23 11:00:00.000000000", "198.51.100.7", "100", false),
		mk(5, "2026-11-23 07:00:00.000000001", "192.0.2.20", "..", false),
		mk(6, recent, "45.134.26.1", "0046812118532", true),
		mk(7, recent, "91.92.240.3", "0046812118532", false),
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	ips, _ := feed.NewIPGuard(nil, true)
	nums, _ := feed.NewNumberGuard(nil)
	cfg := api.Config{Store: st, Feeds: st, Guards: feed.Guards{IPs: ips, Numbers: nums},
		Version: "1.2.3", Token: token, FeedPoll: 10 * time.Millisecond, Peers: peers}
	if len(rec) > 0 {
		cfg.Hits = rec[0]
	}
	var h http.Handler = api.Handler(cfg)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = api.HTTPServer(h, nil)
	srv.Start()
	t.Cleanup(srv.Close)
	return &node{st: st, url: srv.URL}
}

func TestLookups(t *testing.T) {
	n := startNode(t, nil, nil)
	c := client.New(n.url+"/", client.WithToken(token))
	ctx := context.Background()

	l, err := c.IP(ctx, "192.0.2.10")
	if err != nil || !l.Known || l.Value != "192.0.2.10" || l.SeenCount != 2 || !l.SeenLocally ||
		l.SeenFirst.Format(client.TimeLayout) != "2026-11-22 09:15:00.000000001" ||
		l.SeenLast.Format(client.TimeLayout) != "2026-11-23 10:00:00.500000000" {
		t.Errorf("known IP: %+v %v", l, err)
	}
	if l, err := c.IP(ctx, "192.0.2.99"); err != nil || l.Known {
		t.Errorf("unknown IP: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "100", client.WithMatch(client.MatchExact)); err != nil || !l.Known || l.SeenCount != 1 {
		t.Errorf("exact number: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, ".."); err != nil || !l.Known || l.Value != ".." {
		t.Errorf("a dot segment as number: %+v %v", l, err)
	}
	if l, err := c.Number(ctx, "100' OR 1=1"); err != nil || l.Known {
		t.Errorf("escaped payload: %+v %v", l, err)
	}
	// Exact: +46812345678 alone; national: every stored form of the same number.
	if l, err := c.Number(ctx, "901146812345678", client.WithMatch(client.MatchExact)); err != nil || l.Known {
		t.Errorf("exact miss: %+v %v", l, err)
	}
	l, err = c.Number(ctx, "901146812345678", client.WithMatch(client.MatchNational))
	var forms []string
	for _, m := range l.MatchedNumbers {
		forms = append(forms, fmt.Sprintf("%s/%d", m.Value, m.SeenCount))
	}
	if err != nil || !l.Known || l.Match != client.MatchNational || l.SeenCount != 3 || strings.Join(forms, ",") != "0046812345678/1,+46812345678/2" {
		t.Errorf("national: %+v %v (%v)", l, err, forms)
	}
	if h, err := c.Health(ctx); err != nil || h.Version != "1.2.3" {
		t.Errorf("health: %+v %v", h, err)
	}
}

func TestLists(t *testing.T) {
	n := startNode(t, nil, nil)
	c := client.New(n.url, client.WithToken(token))
	ctx := context.Background()
	p, err := c.IPs(ctx, client.ListOptions{Limit: 1, Offset: 1})
	if err != nil || p.Total != 6 || len(p.Entries) != 1 || p.Entries[0].Value == "" || p.Entries[0].SeenLast.IsZero() {
		t.Fatalf("a page of addresses: %+v %v", p, err)
	}
	whole, err := c.Numbers(ctx, client.ListOptions{})
	if err != nil || whole.Total != 5 || len(whole.Entries) != 5 {
		t.Fatalf("every number: %+v %v", whole, err)
	}
	var paged []string
	for e, err := range c.AllNumbers(ctx, client.ListOptions{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, e.Value)
	}
	var want []string
	for _, e := range whole.Entries {
		want = append(want, e.Value)
	}
	if strings.Join(paged, ",") != strings.Join(want, ",") {
		t.Errorf("paged %v, want %v", paged, want)
	}
	if p, err := c.Numbers(ctx, client.ListOptions{Since: "1h"}); err != nil || p.Total != 1 || p.Entries[0].Value != "0046812118532" {
		t.Errorf("since: %+v %v", p, err)
	}
	// Stopping early stops the paging.
	count := 0
	for range c.AllIPs(ctx, client.ListOptions{Limit: 1}) {
		if count++; count == 2 {
			break
		}
	}
	if _, err := c.IPs(ctx, client.ListOptions{Since: "yesterday-ish"}); !isStatus(err, 400) {
		t.Errorf("a bad since: %v, want a 400 APIError", err)
	}
}

func isStatus(err error, status int) bool {
	var api *client.APIError
	return errors.As(err, &api) && api.Status == status && api.FromNode
}

// The stream: the set (one verified address), a sync, then an address written later; a
// resume from the cursor sends only what changed.
func TestStream(t *testing.T) {
	n := startNode(t, nil, nil)
	c := client.New(n.url, client.WithToken(token))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	var cursor string
	for ch, err := range c.Stream(ctx, client.StreamOptions{TTL: "1h"}) {
		if err != nil {
			t.Fatal(err)
		}
		switch ch.Op {
		case client.OpAdd:
			got = append(got, "add "+ch.IP)
			if ch.Timeout < 3500*time.Second {
				t.Errorf("timeout %s", ch.Timeout)
			}
		case client.OpSync:
			got = append(got, fmt.Sprintf("sync %v", ch.Full))
			if err := n.st.Write(ctx, []*event.Event{mk(20, event.FormatTime(time.Now()), "2a0e:8f02:21c0::7", "", true)}); err != nil {
				t.Fatal(err)
			}
		case client.OpCursor:
			cursor = ch.Cursor
		}
		if cursor != "" {
			break
		}
	}
	if s := strings.Join(got, "; "); s != "add 45.134.26.1; sync true; add 2a0e:8f02:21c0::7" {
		t.Errorf("stream: %s", s)
	}
	for ch, err := range c.Stream(ctx, client.StreamOptions{TTL: "1h", Cursor: cursor}) {
		if err != nil || ch.Op != client.OpSync || ch.Full {
			t.Errorf("resumed stream starts with %+v %v, want a sync without the set", ch, err)
		}
		break
	}
	// Follow reconnects from the last cursor; here it ends when fn says so.
	stop := errors.New("stop")
	var ops []string
	err := c.Follow(ctx, client.StreamOptions{TTL: "1h"}, func(ch client.Change) error {
		ops = append(ops, ch.Op)
		if ch.Op == client.OpSync {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || strings.Join(ops, ",") != "add,add,sync" {
		t.Errorf("follow: %v %v", ops, err)
	}
	// A refused token ends Follow at once.
	if err := client.New(n.url).Follow(ctx, client.StreamOptions{}, func(client.Change) error { return nil }); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("follow without a token: %v", err)
	}
}

func TestErrors(t *testing.T) {
	n := startNode(t, nil, nil)
	ctx := context.Background()
	for _, tok := range []string{"", "wrong"} {
		_, err := client.New(n.url, client.WithToken(tok)).IP(ctx, "192.0.2.10")
		if !errors.Is(err, client.ErrUnauthorized) || errors.Is(err, client.ErrNotFound) {
			t.Errorf("token %q: %v, want ErrUnauthorized", tok, err)
		}
	}
	// A route the node does not have: an error, never "unknown".
	wrong := client.New(n.url+"/prefix", client.WithToken(token))
	if l, err := wrong.IP(ctx, "192.0.2.99"); !errors.Is(err, client.ErrNotFound) || l.Known {
		t.Errorf("unknown route: %+v %v, want ErrNotFound", l, err)
	}
	// Peers on a node without peer-to-peer: its 404.
	if _, err := client.New(n.url, client.WithToken(token)).Peers(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("peers off: %v", err)
	}
	withPeers := startNode(t, nil, func() any { return map[string]string{"peer_id": "12D3KooW"} })
	if b, err := client.New(withPeers.url, client.WithToken(token)).Peers(ctx); err != nil || !strings.Contains(string(b), `"peer_id": "12D3KooW"`) {
		t.Errorf("peers: %s %v", b, err)
	}
	// The same "not found" from a server that is not a node is an error too.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		w.Write([]byte(`{"message": "No bad actor found"}`))
	}))
	defer other.Close()
	_, err := client.New(other.URL).IP(ctx, "192.0.2.99")
	var api *client.APIError
	if !errors.As(err, &api) || api.FromNode || errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), "is it a dialtrap node?") {
		t.Errorf("a proxy's 404: %v", err)
	}
	for _, bad := range []string{"", "127.0.0.1:8082", "ftp://x", "http://"} {
		if _, err := client.New(bad).IP(ctx, "192.0.2.10"); !errors.Is(err, client.ErrBadBaseURL) {
			t.Errorf("base URL %q: %v", bad, err)
		}
	}
	// Nobody listening: a ConnError after the retries.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	var ce *client.ConnError
	if _, err := client.New(down.URL, client.WithRetries(2, time.Millisecond, time.Millisecond)).IP(ctx, "192.0.2.10"); !errors.As(err, &ce) {
		t.Errorf("node down: %v", err)
	}
}

// failing answers status (with Retry-After when retryAfter is set) to the first n requests,
// then lets the node answer.
func failing(status, n int, retryAfter string, calls *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if int(calls.Add(1)) <= n {
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
				w.Header().Set("X-Powered-By", "dialtrap")
				w.WriteHeader(status)
				w.Write([]byte(`{"error": "busy"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestRetries(t *testing.T) {
	ctx := context.Background()
	for _, status := range []int{502, 503, 504, 429} {
		var calls atomic.Int32
		n := startNode(t, failing(status, 2, "", &calls), nil)
		c := client.New(n.url, client.WithToken(token), client.WithRetries(3, time.Millisecond, 5*time.Millisecond))
		if l, err := c.IP(ctx, "192.0.2.10"); err != nil || !l.Known || calls.Load() != 3 {
			t.Errorf("%d twice, then the answer: %+v %v after %d calls", status, l, err, calls.Load())
		}
		calls.Store(0)
		c.MaxAttempts = 2
		if _, err := c.IP(ctx, "192.0.2.10"); !isStatus(err, status) || calls.Load() != 2 {
			t.Errorf("%d past the attempts: %v after %d calls", status, err, calls.Load())
		}
	}
	// 429 with Retry-After: waited, then answered; RateLimitedError when it is not waited.
	var calls atomic.Int32
	n := startNode(t, failing(429, 1, "1", &calls), nil)
	c := client.New(n.url, client.WithToken(token))
	start := time.Now()
	if l, err := c.IP(ctx, "192.0.2.10"); err != nil || !l.Known || time.Since(start) < time.Second {
		t.Errorf("429 with Retry-After 1: %+v %v in %s", l, err, time.Since(start))
	}
	// A wait of 8 s (under MaxRetryAfter) against a deadline of 5 s: the error comes at once, not at the deadline
	// (the bound is loose for a loaded CI machine, and far below 5 s).
	var waited atomic.Int32
	n = startNode(t, failing(429, 1, "8", &waited), nil)
	c = client.New(n.url, client.WithToken(token))
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start = time.Now()
	_, err := c.IP(short, "192.0.2.10")
	var rl *client.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 8*time.Second || time.Since(start) > 2*time.Second {
		t.Errorf("a Retry-After past the deadline: %v in %s, want the RateLimitedError at once", err, time.Since(start))
	}
	// A 401 or a 400 is not retried.
	var refused atomic.Int32
	n = startNode(t, failing(400, 1, "", &refused), nil)
	if _, err := client.New(n.url, client.WithToken(token)).IP(ctx, "192.0.2.10"); !isStatus(err, 400) || refused.Load() != 1 {
		t.Errorf("400: %v after %d calls", err, refused.Load())
	}
}

// A node that stalls: the context's deadline ends the call, and the fail-open check answers
// "unknown" within its budget.
func TestStall(t *testing.T) {
	release := make(chan struct{})
	stall := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
	}
	n := startNode(t, stall, nil)
	defer close(release)
	c := client.New(n.url, client.WithToken(token))
	// The node never answers (until the test ends), so a call that ignored its deadline would
	// not return in time; the slack allows a loaded CI machine, not a missed deadline.
	const slack = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.IP(ctx, "192.0.2.10")
	if el := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || el > 100*time.Millisecond+slack {
		t.Errorf("stalled lookup: %v after %s", err, el)
	}
	const budget = 50 * time.Millisecond
	for i := 0; i < 3; i++ {
		start := time.Now()
		v := c.CheckNumber(context.Background(), "+46812345678", budget, client.WithMatch(client.MatchNational))
		if el := time.Since(start); v.Known || v.Err == nil || el > budget+slack {
			t.Errorf("fail-open check: %+v after %s, want unknown within %s", v, el, budget)
		}
	}
	// Against a healthy node the same check answers.
	ok := startNode(t, nil, nil)
	v := client.New(ok.url, client.WithToken(token)).CheckNumber(context.Background(), "0046812345678", time.Second, client.WithMatch(client.MatchNational))
	if !v.Known || v.Err != nil || len(v.Lookup.MatchedNumbers) != 2 {
		t.Errorf("check: %+v", v)
	}
	if v := client.New(ok.url, client.WithToken(token)).CheckIP(context.Background(), "192.0.2.99", time.Second); v.Known || v.Err != nil {
		t.Errorf("check IP: %+v", v)
	}
}

// /hits as the node serves it (the route comes with hit recording; here a handler with its
// shape stands in front of the real node).
func TestHits(t *testing.T) {
	// The node records its own hits (internal/hits): two lookups that match, one that does not.
	rec := hits.New(hits.Config{})
	n := startNode(t, nil, nil, rec)
	c := client.New(n.url, client.WithToken(token))
	ctx := context.Background()
	for _, q := range []string{"0046812345678", "999", "+46812345678"} {
		if _, err := c.Number(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	p, err := c.Hits(ctx, client.HitsOptions{Limit: 1, Offset: 1})
	if err != nil || p.Total != 2 || len(p.Hits) != 1 {
		t.Fatalf("hits: %+v %v", p, err)
	}
	h := p.Hits[0] // newest first: the second of the two is the first lookup
	if h.Kind != "number" || h.Value != "0046812345678" || h.Matched != "0046812345678" || h.SeenCount != 1 ||
		h.Token != "default" || h.Source != "api" || h.Client != "127.0.0.1" || time.Since(h.Time) > time.Minute {
		t.Errorf("hit: %+v", h)
	}
}

// The SDK follows no redirect: one could carry the token to another port or to plain http.
func TestNoRedirects(t *testing.T) {
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
	}))
	defer other.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	defer redirector.Close()
	_, err := client.New(redirector.URL, client.WithToken("s3cret-token")).IP(context.Background(), "192.0.2.1")
	if err == nil || leaked.Load() {
		t.Fatalf("a redirect was followed (err %v, token sent on: %v)", err, leaked.Load())
	}
}
