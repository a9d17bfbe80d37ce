package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// hookReceiver is the webhook endpoint and the OAuth2 token endpoint of a service, on
// loopback. Its mode is switched by the test to act out outages.
type hookReceiver struct {
	t      *testing.T
	secret string
	mode   atomic.Value // string: ok, 500, 429, slow, hang

	hook, token *httptest.Server
	hookAddr    string
	release     chan struct{} // closed at the end: hanging handlers return
	slowDone    atomic.Int64  // slow answers given, each after the node had given up

	mu        sync.Mutex
	got       map[string]int // accepted deliveries per event_uuid
	statuses  map[int]int
	tokens    map[string]bool
	fetches   int
	audiences map[string]bool
	problems  []string
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret, release: make(chan struct{}), got: map[string]int{},
		statuses: map[int]int{}, tokens: map[string]bool{}, audiences: map[string]bool{}}
	r.mode.Store("ok")
	r.token = httptest.NewServer(http.HandlerFunc(r.serveToken))
	// A port that stays free while the test takes the receiver down (up brings it back).
	r.hook = httptest.NewUnstartedServer(http.HandlerFunc(r.serveHook))
	r.hook.Listener.Close()
	r.hook.Listener = testutil.StableListener(t)
	r.hook.Start()
	r.hookAddr = r.hook.Listener.Addr().String()
	t.Cleanup(func() {
		close(r.release)
		r.hook.Close()
		r.token.Close()
	})
	return r
}

func (r *hookReceiver) serveToken(w http.ResponseWriter, req *http.Request) {
	id, secret, _ := req.BasicAuth()
	if err := req.ParseForm(); err != nil || id != "hook-client" || secret != "hook-secret" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	r.mu.Lock()
	r.fetches++
	tok := fmt.Sprintf("tok-%d", r.fetches)
	r.tokens[tok] = true
	r.audiences[req.PostForm.Get("audience")] = true
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
}

func (r *hookReceiver) serveHook(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	status := r.answer(req, body)
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	r.mu.Lock()
	r.statuses[status]++
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *hookReceiver) answer(req *http.Request, body []byte) int {
	var e event.Event
	if err := json.Unmarshal(body, &e); err != nil || e.UUID == "" || e.AppName != "dialtrap" {
		r.problem("not an event: %q", body)
		return http.StatusBadRequest
	}
	m := hmac.New(sha256.New, []byte(r.secret))
	m.Write([]byte(req.Header.Get("X-Dialtrap-Timestamp") + "." + string(body)))
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); req.Header.Get("X-Dialtrap-Signature") != want {
		r.problem("bad signature on %s", e.UUID)
		return http.StatusUnauthorized
	}
	if !strings.HasPrefix(req.Header.Get("User-Agent"), "dialtrap/") {
		r.problem("User-Agent %q", req.Header.Get("User-Agent"))
	}
	tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	r.mu.Lock()
	valid := r.tokens[tok]
	r.mu.Unlock()
	if !valid {
		return http.StatusUnauthorized
	}
	switch r.mode.Load() {
	case "500":
		return http.StatusInternalServerError
	case "429":
		return http.StatusTooManyRequests
	case "slow":
		time.Sleep(1500 * time.Millisecond) // past the node's 1 s request timeout
		r.slowDone.Add(1)
	case "hang":
		<-r.release
		return http.StatusServiceUnavailable
	}
	r.mu.Lock()
	r.got[e.UUID]++
	r.mu.Unlock()
	return http.StatusAccepted
}

func (r *hookReceiver) problem(f string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(f, args...))
	r.mu.Unlock()
}

func (r *hookReceiver) revokeTokens() {
	r.mu.Lock()
	clear(r.tokens)
	r.mu.Unlock()
}

func (r *hookReceiver) down() { r.hook.Close() }

func (r *hookReceiver) up() {
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", r.hookAddr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.hook = httptest.NewUnstartedServer(http.HandlerFunc(r.serveHook))
	r.hook.Listener.Close()
	r.hook.Listener = ln
	r.hook.Start()
}

// waitDelivered waits until every event in ids has been accepted, failing on any bad request.
func (r *hookReceiver) waitDelivered(t *testing.T, n *node, ids []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		r.mu.Lock()
		for _, id := range ids {
			if r.got[id] == 0 {
				missing++
			}
		}
		problems := append([]string(nil), r.problems...)
		r.mu.Unlock()
		if len(problems) > 0 {
			t.Fatalf("receiver: %q", problems)
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never reached the webhook\n%s", missing, len(ids), tail(n.log(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *hookReceiver) statusCount(code int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statuses[code]
}

func (r *hookReceiver) waitStatus(t *testing.T, code, atLeast int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.statusCount(code) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("the node sent no request answered %d in 20 s", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hookArgs(r *hookReceiver) []string {
	return []string{"-r", "-w", r.hook.URL + "/events", "-i", "hook-client", "-c", "hook-secret",
		"--webhook-token-url", r.token.URL + "/oauth/token", "--webhook-audience", "https://events.test/",
		"--webhook-secret", r.secret, "--webhook-timeout", "1s", "--webhook-max-backoff", "2s"}
}

func sippCalls(t *testing.T, n *node, calls int, number string) {
	t.Helper()
	if out, err := run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", number,
		"-m", strconv.Itoa(calls), "-r", "50", "-t", "u1", "-i", "127.0.0.1", "-p", fmt.Sprint(testutil.FreePort(t, "")),
		"-nostdin", "-timeout", "30", "-timeout_error", fmt.Sprintf("127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("sipp: %v\n%s", err, tail(out, 2000))
	}
}

// Every event the node stores reaches the webhook although the endpoint fails in every way a
// service fails, the token is revoked, and the node restarts during an outage.
func TestWebhookDeliversEveryEventThroughOutagesAndARestart(t *testing.T) {
	need(t, "sipp", "sipsak")
	r := newHookReceiver(t, "shared-hmac-key")
	n := startNode(t, nodeOpts{args: hookArgs(r)})

	sippCalls(t, n, 10, "0046812118532") // endpoint fine
	r.mode.Store("500")
	sippCalls(t, n, 5, "0046812118533")
	r.waitStatus(t, 500, 2)
	r.mode.Store("429")
	r.waitStatus(t, 429, 1)
	r.mode.Store("slow")
	for _, args := range [][]string{
		{"-s", fmt.Sprintf("sip:100@127.0.0.1:%d", n.port)},
		{"--transport=tcp", "-s", fmt.Sprintf("sip:101@127.0.0.1:%d", n.port)},
	} {
		if out, err := run(t, 30*time.Second, "sipsak", args...); err != nil {
			t.Fatalf("sipsak %v: %v\n%s", args, err, out)
		}
	}
	testutil.Eventually(t, "a few requests time out", 20*time.Second, func() bool { return r.slowDone.Load() >= 2 })
	r.mode.Store("ok")
	r.revokeTokens() // the next request is refused: the node must fetch a new token once
	sippCalls(t, n, 5, "0046812118534")
	r.waitStatus(t, http.StatusUnauthorized, 1)

	r.down() // connection refused from here
	sippCalls(t, n, 10, "0046812118535")
	n.stop() // the node restarts while the endpoint is down
	r.mu.Lock()
	fetched := r.fetches
	r.mu.Unlock()
	n.start()
	sippCalls(t, n, 5, "0046812118536")
	// The restarted node tries the endpoint while it is down: it fetches a token for that.
	testutil.Eventually(t, "the restarted node tries to deliver during the outage", 20*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.fetches > fetched
	})
	r.up()

	n.stop()
	stored := n.events()
	n.start() // what was still spooled goes out after this start
	ids := make([]string, len(stored))
	for i, e := range stored {
		ids[i] = e.UUID
	}
	r.waitDelivered(t, n, ids)
	n.stop()

	r.mu.Lock()
	defer r.mu.Unlock()
	dupes := 0
	for _, c := range r.got {
		dupes += c - 1
	}
	if len(r.got) != len(stored) {
		t.Errorf("webhook received %d distinct events, the store holds %d", len(r.got), len(stored))
	}
	// A token for the first start, a forced one after the 401, one for the start during the
	// outage, and maybe one for the last start (if anything was left to send).
	if r.fetches < 3 || r.fetches > 4 {
		t.Errorf("%d token fetches: want one per start that sends plus one forced by the 401", r.fetches)
	}
	if !r.audiences["https://events.test/"] || len(r.audiences) != 1 {
		t.Errorf("audiences sent to the token endpoint: %v", r.audiences)
	}
	if regexp.MustCompile(`msg="sink totals" sink=webhook delivered=\d+ dropped=[1-9]`).MatchString(n.log()) {
		t.Errorf("the webhook sink dropped events:\n%s", n.log())
	}
	// At least once: only requests that timed out after the endpoint took them come twice.
	t.Logf("%d events stored, all delivered; %d duplicate deliveries (timed-out slow answers); statuses %v",
		len(stored), dupes, r.statuses)
}

// A webhook endpoint that accepts connections and never answers must not cost capture a
// single event: everything the listeners take in is stored, logged and spooled.
func TestWebhookHangingEndpointCostsCaptureNothing(t *testing.T) {
	r := newHookReceiver(t, "k")
	r.mode.Store("hang")
	args := append(hookArgs(r), append([]string{"--webhook-timeout", "60s"}, noFold...)...)
	n := startNode(t, nodeOpts{args: args})
	stop := make(chan struct{})
	sent, flooded := flood(t, fmt.Sprintf("127.0.0.1:%d", n.port), probe, stop)
	// A fixed wait on purpose: the flood runs a while with every webhook worker hung.
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	<-flooded // the sender has stopped
	n.stop()

	evs := n.events()
	m := regexp.MustCompile(`msg="SIP capture totals" messages=(\d+)`).FindStringSubmatch(n.log())
	if m == nil || m[1] != strconv.Itoa(len(evs)) {
		t.Fatalf("capture total %v, store holds %d", m, len(evs))
	}
	for _, m := range regexp.MustCompile(`msg="sink totals" sink=(\w+) delivered=(\d+) dropped=(\d+)`).FindAllStringSubmatch(n.log(), -1) {
		if m[2] != strconv.Itoa(len(evs)) || m[3] != "0" {
			t.Errorf("sink %s delivered %s dropped %s; store holds %d", m[1], m[2], m[3], len(evs))
		}
	}
	// Every stored event waits in the spool (the endpoint never answered, so none was acked).
	spooled := spooledUUIDs(t, n)
	for _, e := range evs {
		if !spooled[e.UUID] {
			t.Fatalf("stored event %s is not in the webhook spool (%d spooled, %d stored)", e.UUID, len(spooled), len(evs))
		}
	}
	t.Logf("flood: %d sent, %d captured, stored and spooled while the webhook hung", sent.Load(), len(evs))
}

// spooledUUIDs reads the event_uuid of every whole record in a node's webhook spool.
func spooledUUIDs(t *testing.T, n *node) map[string]bool {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(n.dir, "webhook-spool", "*.jsonl"))
	out := map[string]bool{}
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		whole := string(b[:strings.LastIndexByte(string(b), '\n')+1])
		for line := range strings.SplitSeq(strings.TrimSuffix(whole, "\n"), "\n") {
			if i := strings.Index(line, `"event_uuid":"`); i >= 0 && len(line) >= i+14+36 {
				out[line[i+14:][:36]] = true
			}
		}
	}
	return out
}

// kill -9 during a flood while the endpoint is down: every event the spool holds at the kill
// is delivered after the restart.
func TestWebhookKill9KeepsTheSpool(t *testing.T) {
	r := newHookReceiver(t, "k")
	r.down()
	n := startNode(t, nodeOpts{args: append(hookArgs(r), noFold...)})
	stop := make(chan struct{})
	flood(t, fmt.Sprintf("127.0.0.1:%d", n.port), probe, stop)
	// Kill once the spool holds a good number of events, with the flood still running.
	testutil.Eventually(t, "the node spools events during the flood", 20*time.Second, func() bool { return len(spooledUUIDs(t, n)) >= 5000 })
	n.kill()
	close(stop)
	spooled := spooledUUIDs(t, n)
	if len(spooled) == 0 {
		t.Fatal("nothing spooled before the kill")
	}
	r.up()
	n.start()
	r.waitDelivered(t, n, slices.Collect(maps.Keys(spooled)))
	n.stop()
	t.Logf("%d events spooled at the kill, all delivered after the restart", len(spooled))
}
