package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/spool"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver is a real HTTP server on loopback that records what arrives, keyed by event_uuid.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	// respond decides each request's answer; n counts requests from 1. nil answers 200.
	respond func(n int, r *http.Request, body []byte) (status int, header http.Header)

	mu       sync.Mutex
	requests int
	got      map[string]int // accepted (2xx) deliveries per event_uuid
	log      []reqLog
	problems []string
}

type reqLog struct {
	at     time.Time
	status int
}

func newReceiver(t *testing.T) *receiver {
	rv := &receiver{t: t, got: map[string]int{}}
	// A port that stays free while a test takes the endpoint down (listenAt brings it back).
	rv.srv = httptest.NewUnstartedServer(http.HandlerFunc(rv.serve))
	rv.srv.Listener.Close()
	rv.srv.Listener = testutil.StableListener(t)
	rv.srv.Start()
	t.Cleanup(rv.srv.Close)
	return rv
}

func (rv *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var e event.Event
	if err := json.Unmarshal(body, &e); err != nil || e.UUID == "" {
		rv.problem("body is not an event: %q", body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		rv.problem("Content-Type %q", ct)
	}
	if k := r.Header.Get("Idempotency-Key"); k != e.UUID {
		rv.problem("Idempotency-Key %q, event_uuid %q", k, e.UUID)
	}
	rv.mu.Lock()
	rv.requests++
	n := rv.requests
	rv.mu.Unlock()
	status := http.StatusOK
	if rv.respond != nil {
		var hdr http.Header
		status, hdr = rv.respond(n, r, body)
		for k, v := range hdr {
			w.Header()[k] = v
		}
	}
	rv.mu.Lock()
	if status >= 200 && status < 300 {
		rv.got[e.UUID]++
	}
	rv.log = append(rv.log, reqLog{at: time.Now(), status: status})
	rv.mu.Unlock()
	w.WriteHeader(status)
}

func (rv *receiver) problem(f string, args ...any) {
	rv.mu.Lock()
	rv.problems = append(rv.problems, fmt.Sprintf(f, args...))
	rv.mu.Unlock()
}

// waitAll waits until every event has been accepted at least once and returns how many were
// accepted more than once.
func (rv *receiver) waitAll(t *testing.T, events []*event.Event, within time.Duration) (dupes int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rv.mu.Lock()
		missing, dupes := 0, 0
		for _, e := range events {
			switch n := rv.got[e.UUID]; {
			case n == 0:
				missing++
			case n > 1:
				dupes += n - 1
			}
		}
		problems := append([]string(nil), rv.problems...)
		rv.mu.Unlock()
		if len(problems) > 0 {
			t.Fatalf("receiver saw bad requests: %q", problems)
		}
		if missing == 0 {
			return dupes
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never arrived", missing, len(events))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func makeEvents(n int, number string) []*event.Event {
	o := event.Origin{
		AppVersion: "test", NodeID: "node", Method: event.Passive, Transport: event.UDP,
		Source: netip.MustParseAddrPort("192.0.2.7:5070"), Dest: netip.MustParseAddrPort("198.51.100.1:5060"),
	}
	out := make([]*event.Event, n)
	for i := range out {
		out[i] = event.New(o, time.Now(), number, "INVITE", "friendly-scanner", []byte("INVITE sip:"+number+"@x SIP/2.0\r\n\r\n"))
	}
	return out
}

func testConfig(t *testing.T, url string) Config {
	return Config{
		URL: url, UserAgent: "dialtrap/test", SpoolDir: filepath.Join(t.TempDir(), "spool"),
		Concurrency: 4, Timeout: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func openSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func closeSink(t *testing.T, s *Sink, grace time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, s *Sink, events []*event.Event) {
	t.Helper()
	for len(events) > 0 {
		n := min(len(events), 500)
		if err := s.Write(context.Background(), events[:n]); err != nil {
			t.Fatal(err)
		}
		events = events[n:]
	}
}

func TestDeliversEveryEventThroughErrorsRateLimitsAndSlowAnswers(t *testing.T) {
	rv := newReceiver(t)
	var limited atomic.Int64 // when the 429 was sent
	rv.respond = func(n int, r *http.Request, _ []byte) (int, http.Header) {
		switch {
		case n <= 5:
			return http.StatusInternalServerError, nil
		case n == 6:
			limited.Store(time.Now().UnixNano())
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}
		case n <= 8:
			time.Sleep(1500 * time.Millisecond) // past the 1 s request timeout
			return http.StatusOK, nil
		case n%10 == 0:
			return http.StatusBadGateway, nil
		}
		return []int{200, 201, 202, 204}[n%4], nil
	}
	s := openSink(t, testConfig(t, rv.srv.URL))
	events := makeEvents(200, "0046812118532")
	write(t, s, events)
	dupes := rv.waitAll(t, events, 20*time.Second)
	closeSink(t, s, 5*time.Second)

	st := s.Stats()
	if st.Delivered != 200 || st.Pending != 0 || st.Dropped != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v: want 200 delivered, none pending, dropped or rejected", st)
	}
	if st.Failures < 6 {
		t.Errorf("%d failed attempts counted, want at least the 5 errors and the 429", st.Failures)
	}
	// The two slow answers came after the client gave up, so those events may arrive twice.
	if dupes > 2 {
		t.Errorf("%d duplicate deliveries, want at most the 2 timed-out ones", dupes)
	}
	// Nothing was sent in the second after the 429.
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, l := range rv.log[6:] {
		if gap := l.at.Sub(time.Unix(0, limited.Load())); gap < 900*time.Millisecond {
			t.Fatalf("a request %v after a 429 with Retry-After: 1", gap)
		}
	}
}

func TestSignatureAndHeaders(t *testing.T) {
	rv := newReceiver(t)
	const secret = "s3cret-shared-with-receiver"
	rv.respond = func(_ int, r *http.Request, body []byte) (int, http.Header) {
		ts := r.Header.Get(HeaderTimestamp)
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts + "." + string(body)))
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		if got := r.Header.Get(HeaderSignature); !hmac.Equal([]byte(got), []byte(want)) {
			rv.problem("signature %q, want %q", got, want)
		}
		if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)) > time.Minute {
			rv.problem("timestamp %q is not recent Unix seconds", ts)
		}
		if ua := r.Header.Get("User-Agent"); ua != "dialtrap/test" {
			rv.problem("User-Agent %q", ua)
		}
		if a := r.Header.Get("Authorization"); a != "" {
			rv.problem("Authorization %q sent without OAuth2 configured", a)
		}
		return http.StatusNoContent, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	cfg.Secret = secret
	s := openSink(t, cfg)
	events := makeEvents(20, "+4412345678")
	write(t, s, events)
	rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)

	// The body is the JSON log line, byte for byte.
	var line bytes.Buffer
	for _, e := range events[:1] {
		b, _ := e.MarshalLine()
		line.Write(b)
	}
	if !strings.Contains(line.String(), `"called_number":"+4412345678"`) {
		t.Fatalf("unexpected event JSON %s", line.String())
	}
}

// With --event-compat ip-port the body is the JSON log's line in that spelling: one object,
// one shape, whichever output a pipeline reads.
func TestCompatIPPortBody(t *testing.T) {
	rv := newReceiver(t)
	var mu sync.Mutex
	bodies := map[string][]byte{}
	rv.respond = func(_ int, _ *http.Request, body []byte) (int, http.Header) {
		var e struct {
			UUID string `json:"event_uuid"`
		}
		if json.Unmarshal(body, &e) == nil {
			mu.Lock()
			bodies[e.UUID] = body
			mu.Unlock()
		}
		return http.StatusOK, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	cfg.Compat = event.CompatIPPort
	s := openSink(t, cfg)
	events := makeEvents(3, "100")
	write(t, s, events)
	rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		want, _ := e.AppendJSONCompat(nil, event.CompatIPPort)
		if got := bodies[e.UUID]; !bytes.Equal(got, want) {
			t.Errorf("body\n got %s\nwant %s", got, want)
		}
		if !bytes.Contains(want, []byte(`"source_ip":"192.0.2.7:5070","destination_ip":"198.51.100.1:5060"`)) {
			t.Errorf("body %s lacks the ip-port spelling", want)
		}
	}
}

// tokenServer is an OAuth2 token endpoint on loopback.
type tokenServer struct {
	srv       *httptest.Server
	fetches   atomic.Int64
	expiresIn atomic.Int64
	down      atomic.Bool
	mu        sync.Mutex
	valid     map[string]bool
	audiences []string
}

func newTokenServer(t *testing.T) *tokenServer {
	ts := &tokenServer{valid: map[string]bool{}}
	ts.expiresIn.Store(3600)
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ts.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || !ok || id != "client-1" || secret != "secret-1" ||
			r.PostForm.Get("grant_type") != "client_credentials" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		n := ts.fetches.Add(1)
		tok := fmt.Sprintf("token-%d", n)
		ts.mu.Lock()
		ts.valid[tok] = true
		ts.audiences = append(ts.audiences, r.PostForm.Get("audience"))
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, ts.expiresIn.Load())
	}))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	clear(ts.valid)
	ts.mu.Unlock()
}

func (ts *tokenServer) isValid(header string) bool {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ok && ts.valid[tok]
}

func oauthConfig(t *testing.T, rv *receiver, ts *tokenServer) Config {
	cfg := testConfig(t, rv.srv.URL)
	cfg.ClientID, cfg.ClientSecret, cfg.TokenURL, cfg.Audience = "client-1", "secret-1", ts.srv.URL, "dialtrap-test-audience"
	rv.respond = func(_ int, r *http.Request, _ []byte) (int, http.Header) {
		if !ts.isValid(r.Header.Get("Authorization")) {
			return http.StatusUnauthorized, nil
		}
		return http.StatusCreated, nil
	}
	return cfg
}

func TestOAuth2TokenIsCachedAndSentWithAudience(t *testing.T) {
	rv, ts := newReceiver(t), newTokenServer(t)
	s := openSink(t, oauthConfig(t, rv, ts))
	events := makeEvents(100, "123456789")
	write(t, s, events)
	rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)
	if n := ts.fetches.Load(); n != 1 {
		t.Errorf("%d token fetches for 100 events, want 1 (the token is valid for an hour)", n)
	}
	if ts.audiences[0] != "dialtrap-test-audience" {
		t.Errorf("audience %q sent to the token endpoint", ts.audiences[0])
	}
	if f := s.Stats().Failures; f != 0 {
		t.Errorf("%d failures", f)
	}
}

func TestOAuth2RefusedTokenIsRefreshedOnceAndRetried(t *testing.T) {
	rv, ts := newReceiver(t), newTokenServer(t)
	s := openSink(t, oauthConfig(t, rv, ts))
	defer closeSink(t, s, time.Second)
	first := makeEvents(1, "1111111")
	write(t, s, first)
	rv.waitAll(t, first, 5*time.Second)

	ts.revokeAll() // the service revoked the token we hold: the next POST gets 401
	second := makeEvents(1, "2222222")
	write(t, s, second)
	rv.waitAll(t, second, 5*time.Second)
	if n := ts.fetches.Load(); n != 2 {
		t.Errorf("%d token fetches, want 2 (one forced by the 401)", n)
	}
	if f := s.Stats().Failures; f != 0 {
		t.Errorf("%d failures counted: the retry with a fresh token should succeed at once", f)
	}
	rv.mu.Lock()
	statuses := []int{}
	for _, l := range rv.log {
		statuses = append(statuses, l.status)
	}
	rv.mu.Unlock()
	if fmt.Sprint(statuses) != "[201 401 201]" {
		t.Errorf("statuses %v, want [201 401 201]", statuses)
	}
}

func TestOAuth2TokenIsRefreshedBeforeItExpires(t *testing.T) {
	rv, ts := newReceiver(t), newTokenServer(t)
	ts.expiresIn.Store(2)
	cfg := oauthConfig(t, rv, ts)
	cfg.RefreshBefore = time.Second // so the token is used for 1 s of its 2
	// The receiver refuses a token in its last second, as a service whose clock runs ahead would.
	issued := map[string]time.Time{}
	var mu sync.Mutex
	rv.respond = func(_ int, r *http.Request, _ []byte) (int, http.Header) {
		h := r.Header.Get("Authorization")
		mu.Lock()
		defer mu.Unlock()
		if _, ok := issued[h]; !ok {
			issued[h] = time.Now()
		}
		if !ts.isValid(h) || time.Since(issued[h]) > time.Second+200*time.Millisecond {
			return http.StatusUnauthorized, nil
		}
		return http.StatusOK, nil
	}
	s := openSink(t, cfg)
	defer closeSink(t, s, time.Second)
	for i := range 3 {
		ev := makeEvents(1, fmt.Sprint(5550000+i))
		write(t, s, ev)
		rv.waitAll(t, ev, 5*time.Second)
		// A fixed wait on purpose: the token ages past its refresh point, so the next event
		// must go out with a fresh one.
		time.Sleep(1100 * time.Millisecond)
	}
	if n := ts.fetches.Load(); n != 3 {
		t.Errorf("%d token fetches over 3 s with 2 s tokens refreshed 1 s early, want 3", n)
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, l := range rv.log {
		if l.status != http.StatusOK {
			t.Errorf("a request got %d: the token was not refreshed before expiry", l.status)
		}
	}
}

func TestOAuth2TokenEndpointDownThenBack(t *testing.T) {
	rv, ts := newReceiver(t), newTokenServer(t)
	ts.down.Store(true)
	s := openSink(t, oauthConfig(t, rv, ts))
	defer closeSink(t, s, time.Second)
	events := makeEvents(10, "987654321")
	write(t, s, events)
	waitFailures(t, s, 3)
	if p := s.Stats().Pending; p != 10 {
		t.Fatalf("pending %d while the token endpoint is down, want 10", p)
	}
	ts.down.Store(false)
	rv.waitAll(t, events, 5*time.Second)
}

// waitFailures waits until s has counted n failed attempts.
func waitFailures(t *testing.T, s *Sink, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Failures < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed attempts after 5 s, want %d", s.Stats().Failures, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listenAt serves h on addr (a port the test used before), retrying briefly.
func listenAt(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestEndpointDownAcrossARestartLosesNothing(t *testing.T) {
	rv := newReceiver(t)
	addr := rv.srv.Listener.Addr().String()
	rv.srv.Close() // the endpoint is down: connections are refused
	cfg := testConfig(t, rv.srv.URL)

	s := openSink(t, cfg)
	events := makeEvents(300, "0046812118532")
	write(t, s, events)
	waitFailures(t, s, 2)
	began := time.Now()
	closeSink(t, s, 10*time.Second) // the node stops while the endpoint is down
	// No new attempts start once Close is called: it need not wait out the grace period.
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Close took %v with the endpoint down; retries went on during shutdown", took)
	}
	if p := s.Stats().Pending; p != 300 {
		t.Fatalf("pending at shutdown %d, want 300", p)
	}

	rv.srv = listenAt(t, addr, http.HandlerFunc(rv.serve)) // the endpoint comes back
	s = openSink(t, cfg)                                   // and so does the node
	dupes := rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)
	if dupes != 0 {
		t.Errorf("%d duplicates: nothing was accepted before the restart", dupes)
	}
	if st := s.Stats(); st.Pending != 0 || st.Delivered != 300 {
		t.Errorf("after restart: %+v", st)
	}
}

func TestRestartInTheMiddleOfDeliveryIsAtLeastOnce(t *testing.T) {
	rv := newReceiver(t)
	rv.respond = func(int, *http.Request, []byte) (int, http.Header) {
		time.Sleep(20 * time.Millisecond) // a slow endpoint on purpose: the restart lands mid-delivery
		return http.StatusOK, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	s := openSink(t, cfg)
	events := makeEvents(400, "0046812118532")
	write(t, s, events)
	for {
		rv.mu.Lock()
		n := len(rv.got)
		rv.mu.Unlock()
		if n >= 50 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	closeSink(t, s, time.Millisecond) // abort what is in flight
	if p := s.Stats().Pending; p == 0 || p == 400 {
		t.Fatalf("pending %d at the restart: the test wants a restart mid-delivery", p)
	}
	s = openSink(t, cfg)
	dupes := rv.waitAll(t, events, 20*time.Second)
	closeSink(t, s, time.Second)
	// Only requests aborted at the restart can be repeated.
	if dupes > cfg.Concurrency {
		t.Errorf("%d duplicates, want at most %d (the requests in flight at the restart)", dupes, cfg.Concurrency)
	}
}

func TestPermanentRejectionIsKeptAndDoesNotBlockOthers(t *testing.T) {
	rv := newReceiver(t)
	rv.respond = func(_ int, _ *http.Request, body []byte) (int, http.Header) {
		if bytes.Contains(body, []byte(`"called_number":"reject-me"`)) {
			return http.StatusUnprocessableEntity, nil
		}
		return http.StatusOK, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	s := openSink(t, cfg)
	bad := makeEvents(3, "reject-me")
	good := makeEvents(50, "4930123456")
	write(t, s, append(append([]*event.Event{}, bad...), good...))
	rv.waitAll(t, good, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Rejected < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	closeSink(t, s, time.Second)
	if st := s.Stats(); st.Rejected != 3 || st.Pending != 0 {
		t.Fatalf("stats %+v, want 3 rejected, none pending", st)
	}
	kept, err := os.ReadFile(filepath.Join(cfg.SpoolDir, "rejected.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range bad {
		if !bytes.Contains(kept, []byte(e.UUID)) {
			t.Errorf("rejected event %s not kept in rejected.jsonl", e.UUID)
		}
	}
	if n := bytes.Count(kept, []byte{'\n'}); n != 3 {
		t.Errorf("rejected.jsonl has %d lines, want 3", n)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	rv := newReceiver(t)
	rv.respond = func(n int, _ *http.Request, _ []byte) (int, http.Header) {
		if n <= 2 {
			return http.StatusTemporaryRedirect, http.Header{"Location": {other.URL}}
		}
		return http.StatusOK, nil
	}
	s := openSink(t, testConfig(t, rv.srv.URL))
	events := makeEvents(5, "0046812118532")
	write(t, s, events)
	rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests followed the redirect", n)
	}
}

func TestHangingEndpointDoesNotHoldUpWrites(t *testing.T) {
	release := make(chan struct{})
	rv := newReceiver(t)
	rv.respond = func(int, *http.Request, []byte) (int, http.Header) {
		<-release
		return http.StatusOK, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	cfg.Timeout = time.Minute // requests hang instead of timing out
	s := openSink(t, cfg)
	events := makeEvents(20000, "0046812118532")
	write(t, s, events) // returns although every worker is stuck in a request
	if p := s.Stats().Pending; p != 20000 {
		t.Fatalf("pending %d, want all 20000 spooled", p)
	}
	close(release)
	rv.waitAll(t, events, 60*time.Second)
	closeSink(t, s, time.Second)
}

// TestFullDiskKeepsTheBatchForRetry fills a small tmpfs under the spool: the write fails with
// a clear error and leaves no part of the batch behind, and once space is back the same batch
// is spooled and delivered exactly once.
func TestFullDiskKeepsTheBatchForRetry(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (the CI runs as root)")
	}
	rv := newReceiver(t)
	hold := make(chan struct{})
	rv.respond = func(int, *http.Request, []byte) (int, http.Header) {
		<-hold
		return http.StatusOK, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	cfg.Timeout = time.Minute
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mount := func(opts string) {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", cfg.SpoolDir).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v: %s", err, out)
		}
	}
	mount("size=256k")
	t.Cleanup(func() { exec.Command("umount", "-l", cfg.SpoolDir).Run() })
	s := openSink(t, cfg)

	var spooled []*event.Event
	var full error
	for range 100 {
		batch := makeEvents(100, "0046812118532")
		if full = s.Write(context.Background(), batch); full != nil {
			spooled = append(spooled, batch...) // written again below
			break
		}
		spooled = append(spooled, batch...)
	}
	if full == nil || !strings.Contains(full.Error(), "disk full") || !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("write to a full spool: %v, want a disk-full error", full)
	}
	if p := s.Stats().Pending; p != int64(len(spooled)-100) {
		t.Fatalf("pending %d after the failed batch, want %d (no part of it kept)", p, len(spooled)-100)
	}
	mount("remount,size=8m")
	if err := s.Write(context.Background(), spooled[len(spooled)-100:]); err != nil {
		t.Fatalf("write after space came back: %v", err)
	}
	close(hold)
	if dupes := rv.waitAll(t, spooled, 30*time.Second); dupes != 0 {
		t.Errorf("%d duplicates", dupes)
	}
	closeSink(t, s, time.Second)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"7", 7 * time.Second}, {"abc", 0},
		{"99999999", maxRetryAfter},
		{"Mon, 23 Nov 2026 12:00:30 GMT", 30 * time.Second},
		{"Mon, 23 Nov 2026 11:00:00 GMT", 0},
		{"Wed, 23 Dec 2026 12:00:00 GMT", maxRetryAfter},
	} {
		if got := parseRetryAfter(c.in, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "ftp://x/y", SpoolDir: dir}, "http:// or https://"},
		{Config{URL: "/events", SpoolDir: dir}, "http:// or https://"},
		{Config{URL: "http://127.0.0.1:1/e", ClientID: "a", ClientSecret: "b", SpoolDir: dir}, "--webhook-token-url"},
		{Config{URL: "http://127.0.0.1:1/e", TokenURL: "http://127.0.0.1:1/t", SpoolDir: dir}, "-i/--oauth2-client-id"},
		{Config{URL: "http://127.0.0.1:1/e", ClientID: "a", ClientSecret: "b", TokenURL: "token", SpoolDir: dir}, "--webhook-token-url"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %q", c.cfg, err, c.want)
		}
	}
}

func TestFullSpoolDropsOldestLogsAndCounts(t *testing.T) {
	rv := newReceiver(t)
	rv.srv.Close() // down for the whole test
	var logs testutil.SyncBuffer
	cfg := testConfig(t, rv.srv.URL)
	cfg.SpoolMax = 256 << 10
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := openSink(t, cfg)
	events := makeEvents(3000, "0046812118532") // about 600 bytes each: 1.8 MB
	write(t, s, events)
	waitFailures(t, s, 3)
	closeSink(t, s, time.Second)

	st := s.Stats()
	if st.Dropped == 0 || st.Dropped+uint64(st.Pending) != 3000 {
		t.Fatalf("stats %+v: want drops, and dropped + pending = 3000", st)
	}
	out := logs.String()
	if n := strings.Count(out, "webhook spool full"); n != 1 {
		t.Errorf("%d spool-full warnings, want 1 (rate-limited):\n%s", n, out)
	}
	if n := strings.Count(out, "delivery failed"); n != 1 {
		t.Errorf("%d delivery-failed warnings for %d failures, want 1 (rate-limited):\n%s", n, st.Failures, out)
	}
	if !strings.Contains(out, fmt.Sprintf("dropped=%d", st.Dropped)) {
		t.Errorf("the shutdown totals do not report %d dropped:\n%s", st.Dropped, out)
	}
	// The newest events are the ones kept.
	sp, err := spool.Open(cfg.SpoolDir, spool.Options{MaxBytes: cfg.SpoolMax})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var kept []string
	for {
		r, ok, err := sp.TryNext()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		kept = append(kept, string(r.Data))
	}
	if last := kept[len(kept)-1]; !strings.Contains(last, events[2999].UUID) {
		t.Errorf("last kept event is not the newest: %.80s", last)
	}
}

func TestLogURLHidesSecrets(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@hooks.example.net/in?key=abc#x": "https://hooks.example.net/in",
		"http://127.0.0.1:8080/events":                   "http://127.0.0.1:8080/events",
		"%zz":                                            "(unparsable URL)",
	} {
		if got := LogURL(in); got != want {
			t.Errorf("LogURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// New touches nothing on disk; Write before Start is refused (the hub retries it), Close
// before Start is a no-op, and a spool another process holds fails Start, not New.
func TestLifecycle(t *testing.T) {
	rv := newReceiver(t)
	cfg := testConfig(t, rv.srv.URL)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.SpoolDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New made the spool directory: %v", err)
	}
	if err := s.Write(context.Background(), makeEvents(1, "100")); err == nil {
		t.Error("Write before Start succeeded")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	first := openSink(t, cfg)
	defer closeSink(t, first, time.Second)
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(context.Background()); err == nil {
		t.Error("a second sink started on a spool in use")
	}
	if err := second.Close(context.Background()); err != nil {
		t.Errorf("Close after a failed Start: %v", err)
	}
}
